"""A stand-in hasher pod as a real process for the fault matrix (``python -m tests.faults.fake_hasher PORT``): kill -9
needs one.

Speaks the two routes the router uses: ``POST /v1/hash`` (deterministic code per image) and
``GET /v2/health/ready``. Raw ASGI: no framework between the socket and the answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys

import uvicorn

from tests.support.asgi import NOT_FOUND, read_body, respond

ENGINE = {"model": "face", "version": "1", "backend": "fake", "precision": "fp32"}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if scope["path"] == "/v1/hash":
        images = [base64.b64decode(i) for i in json.loads(body)["images"]]
        codes = [hashlib.blake2b(i, digest_size=16).hexdigest() for i in images]
        payload, status = json.dumps({"engine": ENGINE, "codes": codes}).encode(), 200
    elif scope["path"] in ("/v2/health/ready", "/v2/health/live"):
        payload, status = b"{}", 200
    else:
        payload, status = NOT_FOUND, 404
    await respond(send, status, payload)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
