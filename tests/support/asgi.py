"""Raw ASGI for stand-in servers (fake pods, a trivial upstream): no framework between socket and answer."""

from __future__ import annotations

NOT_FOUND = b'{"error": {"code": "not_found", "message": "no route"}}'


async def read_body(receive) -> bytes:
    """The whole request body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send, status: int, payload: bytes, content_type: bytes = b"application/json") -> None:
    """One complete response with a content length."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
