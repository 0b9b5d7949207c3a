"""Pure ASGI body-size limit: 413 JSON before the app parses anything too large.

With a Content-Length the check is immediate; a chunked body is read up to the limit, then
replayed to the app (the app would buffer it whole anyway to parse JSON).
"""

from __future__ import annotations

from typing import Any

from router.errors import PayloadTooLarge, error_response


async def _reject(scope: dict[str, Any], receive: Any, send: Any, limit: int) -> None:
    await error_response(PayloadTooLarge(f"request body larger than {limit} bytes"))(scope, receive, send)


class BodyLimitMiddleware:
    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        length = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = -1
        if length is not None:
            if length < 0 or length > self.limit:
                await _reject(scope, receive, send, self.limit)
                return
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _reject(scope, receive, send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> dict[str, Any]:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)
