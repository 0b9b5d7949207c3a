"""A stand-in for the router's public API, for testing the Locust plumbing without the stack.

Same paths, auth and response shapes as router/ (router.schemas: AuditRecord, HashApiResponse,
EnrollResponse; explanation SSE events delta/final), but no models: codes are hashes of the
image bytes. Face traffic is split 50/50 between arms v1 and v2 by a sticky hash of the subject,
so a short run sees both. Verifying a subject that was never enrolled answers 404, so the
enrol-before-verify logic of the users is exercised. `--hash-status 503` makes /v1/hash fail
(to test the error-rate gate).

    python tests/load_tests/fake_router.py --port 0 --api-key KEY   # prints "listening on PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def _arm(subject: str) -> str:
    return "v2" if hashlib.sha256(subject.encode()).digest()[0] % 2 else "v1"


def _error(status: int, code: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": code.replace("_", " ")}}, status_code=status)


def create_app(api_key: str, hash_status: int, lock_every: int = 0) -> FastAPI:
    app = FastAPI()
    enrolled: set[str] = set()
    audits: dict[str, dict[str, Any]] = {}

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        if request.url.path != "/readyz" and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "unauthorized")
        return await call_next(request)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/enroll")
    async def enroll(body: dict[str, Any]) -> dict[str, Any]:
        enrolled.add(body["subject_id"])
        templates = [{"modality": m, "arm": arm, "backend": f"hasher-{m}-{arm}", "model_version": arm[1:],
                      "precision": "fp32", } for m in ("face", "fingerprint") if m in body
                     for arm in (("v1", "v2") if m == "face" else ("v1",))]
        return {"subject_id": body["subject_id"], "templates": templates, "failed": [], "trace_id": "0" * 32}

    @app.post("/v1/verify")
    async def verify(body: dict[str, Any]) -> Any:
        subject = body["subject_id"]
        if subject not in enrolled:
            return _error(404, "subject_not_enrolled")
        results = []
        for modality in ("face", "fingerprint"):
            if modality in body:
                arm = _arm(subject) if modality == "face" else "v1"
                distance = hashlib.sha256(body[modality].encode()).digest()[0] % 40
                results.append({"modality": modality, "route": modality, "arm": arm, "arm_reason": "sticky",
                                "backend": f"hasher-{modality}-{arm}", "model_version": arm[1:],
                                "precision": "fp32", "engine_backend": "fake", "distance": distance,
                                "decision": "accept" if distance <= 20 else "reject", "latency_ms": 1.0,
                                "attempts": 1, "fallbacks": []})
        fused = sum(r["distance"] for r in results) / len(results)
        record = {"audit_id": uuid.uuid4().hex, "created_at": 0.0, "trace_id": "0" * 32, "subject_id": subject,
                  "decision": "accept" if fused <= 20 else "reject", "threshold": 20.0,
                  "fused_distance": fused, "latency_ms": 1.0, "modalities": results}
        audits[record["audit_id"]] = record
        return record

    @app.post("/v1/hash")
    async def hash_(body: dict[str, Any]) -> Any:
        if hash_status != 200:
            return _error(hash_status, "overloaded")
        subject = body.get("subject_id") or "anonymous"
        arm = _arm(subject) if body["modality"] == "face" else "v1"
        codes = [hashlib.md5(img.encode()).hexdigest() for img in body["images"]]
        return {"modality": body["modality"], "arm": arm, "backend": "fake", "model_version": arm[1:],
                "precision": "fp32", "engine_backend": "fake", "codes": codes, "fallbacks": [],
                "trace_id": "0" * 32}

    @app.get("/v1/audit/{audit_id}")
    async def audit(audit_id: str) -> Any:
        return audits[audit_id] if audit_id in audits else _error(404, "audit_not_found")

    outcomes: dict[str, bool] = {}
    tries: dict[str, int] = {}

    @app.post("/v1/audit/{audit_id}/outcome")
    async def outcome(audit_id: str, body: dict[str, Any]) -> Any:
        if audit_id not in audits:
            return _error(404, "not_found")
        genuine = body["genuine"]
        if outcomes.setdefault(audit_id, genuine) != genuine:
            return _error(409, "outcome_conflict")
        return {"audit_id": audit_id, "genuine": genuine, "stored": True}

    @app.middleware("http")
    async def lock_some_verifications(request: Request, call_next: Any) -> Any:
        """With --lock-every N, every Nth verification is throttled, as the router's subject lock would."""
        if lock_every and request.url.path == "/v1/verify":
            tries["all"] = tries.get("all", 0) + 1
            if tries["all"] % lock_every == 0:
                return _error(429, "subject_locked")
        return await call_next(request)

    @app.get("/v1/audit/{audit_id}/explanation")
    async def explanation(audit_id: str, request: Request) -> Any:
        if audit_id not in audits:
            return _error(404, "audit_not_found")
        record = audits[audit_id]
        text = f"The verification was {record['decision']}ed: fused distance {record['fused_distance']}."

        async def events() -> AsyncIterator[bytes]:
            for word in text.split(" "):
                await asyncio.sleep(0.005)
                yield f"event: delta\ndata: {json.dumps({'text': word + ' '})}\n\n".encode()
            final = {"audit_id": audit_id, "text": text, "source": "template", "reason": None, "model": "fake",
                     "backend": "fake"}
            yield f"event: final\ndata: {json.dumps(final)}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--hash-status", type=int, default=200)
    parser.add_argument("--lock-every", type=int, default=0, help="answer every Nth /v1/verify 429 subject_locked")
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)  # connections queue from now on: a client may connect as soon as it reads the port
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    app = create_app(args.api_key, args.hash_status, args.lock_every)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
