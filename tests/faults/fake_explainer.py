"""A stand-in explainer pod as a real process (``python -m tests.faults.fake_explainer PORT``) for the fault matrix.

Speaks what the router uses of the explainer: ``GET /readyz`` and ``POST /v1/explain`` (JSON, or SSE
with ``stream: true``), answering with a one-sentence explanation built from the record.
"""

from __future__ import annotations

import json
import sys

import uvicorn

from tests.support.asgi import NOT_FOUND, read_body, respond


def _explanation(record: dict) -> dict:
    return {"audit_id": record["audit_id"], "text": f"The decision was {record['decision']}.",
            "source": "template", "reason": "fake explainer", "model": "fake", "backend": "vllm-cpu"}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    content_type = b"application/json"
    if scope["path"] == "/readyz":
        payload, status = b'{"status": "ready"}', 200
    elif scope["path"] == "/v1/explain":
        request = json.loads(body)
        final = _explanation(request["record"])
        status = 200
        if request.get("stream"):
            content_type = b"text/event-stream"
            payload = f"event: final\ndata: {json.dumps(final)}\n\n".encode()
        else:
            payload = json.dumps(final).encode()
    else:
        payload, status = NOT_FOUND, 404
    await respond(send, status, payload, content_type)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
