"""The impostor-migration attack on the whole stack (`servestack up`, real hasher processes).

A subject enrolled on face v1 only; a probe with someone else's face and the subject's own
fingerprint, sent with `"threshold": 50`, is accepted by fusion. Before the fix its face became
the subject's face v2 template. Now only a genuine match (the face's own distance within the
server's migration threshold, no fallback, an accepted record) migrates, with its audit id.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from servestack.samples import write_samples
from servestack.stackfile import StackInfo
from tests.e2e.test_canary_flow import admin, policy_restored, put_policy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MIGRATION_THRESHOLD = 24  # the router's default_threshold: the stack sets no other


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _face_templates(stack: StackInfo, subject: str) -> dict[str, tuple[str, str, str | None]]:
    engine = create_engine(f"sqlite:///{stack.state_dir / 'audit.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT model_version, code, source, audit_id FROM templates "
                                     "WHERE tenant = 'local' AND subject_id = :s AND modality = 'face'"),
                                {"s": subject}).all()
    finally:
        engine.dispose()
    return {r.model_version: (r.code, r.source, r.audit_id) for r in rows}


def test_an_impostor_face_accepted_by_fusion_is_never_migrated_a_genuine_one_is(stack: StackInfo,
                                                                                  tmp_path: Path) -> None:
    router = stack.services["router"]
    samples = write_samples(tmp_path / "a")
    others = write_samples(tmp_path / "b", seed=8)
    subject = f"sec-{time.time_ns()}"
    with httpx.Client(base_url=router, timeout=120, headers=admin(stack)) as http, policy_restored(stack) as policy:
        def code(path: Path, arm: str) -> str:
            r = http.post("/v1/hash", headers={"X-ServeStack-Arm": f"face={arm}"},
                          json={"modality": "face", "images": [_b64(path)]})
            assert r.status_code == 200, r.text
            return r.json()["codes"][0]

        # An impostor face the fusion lets through (<= 100 bits off at threshold 50) that the
        # migration threshold must stop (> 24 bits off).
        genuine_v1 = int(code(samples["face"], "v1"), 16)
        distances = {p: (int(code(p, "v1"), 16) ^ genuine_v1).bit_count()
                     for p in (samples["face2"], others["face"], others["face2"])}
        impostor = next((p for p, d in distances.items() if MIGRATION_THRESHOLD < d <= 100), None)
        assert impostor is not None, f"no impostor image in the attack's range: {distances}"

        # Enrol on face v1 only (v2 out of the route), then put v2 back at 10 % as the canary.
        only_v1 = {**policy, "routes": {**policy["routes"], "face": {
            **{k: v for k, v in policy["routes"]["face"].items() if k != "shadow"},
            "arms": [{**a, "weight": 100 if a["name"] == "v1" else 0} for a in policy["routes"]["face"]["arms"]]}}}
        put_policy(stack, only_v1)
        r = http.post("/v1/enroll", json={"subject_id": subject, "face": _b64(samples["face"]),
                                          "fingerprint": _b64(samples["fingerprint"])})
        assert r.status_code == 200, r.text
        put_policy(stack, policy)
        assert set(_face_templates(stack, subject)) == {"1"}
        code(samples["face"], "v2")  # the router learns which version face v2's backend serves

        pin_v1 = {"X-ServeStack-Arm": "face=v1"}
        attack = http.post("/v1/verify", headers=pin_v1, json={
            "subject_id": subject, "face": _b64(impostor), "fingerprint": _b64(samples["fingerprint"]),
            "threshold": 50})
        assert attack.status_code == 200, attack.text
        body = attack.json()
        assert body["decision"] == "accept", body  # fusion accepted it: the attack's premise holds
        assert next(m for m in body["modalities"] if m["modality"] == "face")["distance"] > MIGRATION_THRESHOLD

        genuine = http.post("/v1/verify", headers=pin_v1, json={"subject_id": subject, "face": _b64(samples["face"])})
        assert genuine.status_code == 200 and genuine.json()["decision"] == "accept", genuine.text
        deadline = time.monotonic() + 30
        while "2" not in (stored := _face_templates(stack, subject)):
            assert time.monotonic() < deadline, "the genuine match was not migrated to face v2"
            time.sleep(0.2)
        # Migration never overwrites: had the impostor's probe been migrated first, its code and
        # audit id would be there now.
        assert stored["2"] == (code(samples["face"], "v2"), "migration", genuine.json()["audit_id"])
        assert code(impostor, "v2") != stored["2"][0]

        r = http.delete(f"/v1/subjects/{subject}")
        assert r.status_code == 204, r.text
        assert _face_templates(stack, subject) == {}
        r = http.post("/v1/verify", json={"subject_id": subject, "face": _b64(samples["face"])})
        assert r.status_code == 404 and r.json()["error"]["code"] == "subject_not_found"
