"""A short load test against the whole local stack: no failures, and both face arms serve.

About 25 s: 4 users for 20 s of the verify-heavy scenario (enrolment of each new subject, then
verifications, some audit reads), traffic only to the stack's router on 127.0.0.1. The face
route splits 90/10 between v1 and v2 by a sticky hash of the subject, so both arms serve once a
few dozen distinct subjects have verified; a flatter Zipf law than the default makes that happen
within the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from servestack.stackfile import StackInfo
from tests.support.stack import run_loadtest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_short_verify_run_has_no_failures_and_serves_both_face_arms(
    stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = stack.services["router"]
    assert router.startswith("http://127.0.0.1:")
    monkeypatch.setenv("SERVESTACK_LOADTEST_ZIPF_EXPONENT", "0.6")
    out = tmp_path / "loadtest"
    rc, summary = run_loadtest(stack, out, "--scenario", "verify", "--users", "4", "--duration", "20s",
                               "--subjects", "400", "--max-error-rate", "0")
    assert summary["totals"]["failures"] == 0, summary["errors"]
    assert rc == 0, summary["violations"]
    verified = sum(e["requests"] for e in summary["endpoints"] if e["name"].startswith("/v1/verify"))
    assert verified > 0
    face = {a["arm"]: a["count"] for a in summary["arms"] if a["endpoint"] == "verify" and a["modality"] == "face"}
    assert face.get("v1", 0) > 0 and face.get("v2", 0) > 0, face
    assert sum(face.values()) == verified  # every verification named the arm that served its face
