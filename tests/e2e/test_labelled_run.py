"""A short labelled load run on the whole local stack: the report's FAR/FRR per arm equal a recount
from the audit rows.

About 20 s: 4 users of the labelled scenario (genuine probes and impostor probes of another scene,
each outcome posted back), then ``GET /v1/experiments/{name}`` is compared with a count made
directly from the stack's audit database (randomised face rows joined with their outcomes).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from servestack.stackfile import StackInfo
from tests.support.stack import run_loadtest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_labelled_run_gives_far_frr_per_arm_that_match_the_audit_rows(
    stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = stack.services["router"]
    monkeypatch.setenv("SERVESTACK_LOADTEST_ZIPF_EXPONENT", "0.6")
    monkeypatch.setenv("SERVESTACK_LOADTEST_FINGERPRINT_SHARE", "0")
    out = tmp_path / "labelled"
    rc, summary = run_loadtest(stack, out, "--scenario", "labelled", "--users", "4", "--duration", "15s",
                               "--subjects", "300", "--max-error-rate", "0")
    assert summary["totals"]["failures"] == 0, summary["errors"]
    assert rc == 0, summary["violations"]
    posted = sum(e["requests"] for e in summary["endpoints"] if e["name"] == "/v1/audit/{id}/outcome")
    assert posted > 20

    headers = {"Authorization": f"Bearer {stack.api_key}"}
    experiments = httpx.get(f"{router}/v1/experiments", headers=headers, timeout=30).json()["experiments"]
    face = next(e for e in experiments if e["route"] == "face")
    report = httpx.get(f"{router}/v1/experiments/{face['name']}", headers=headers, timeout=60).json()
    threshold = report["threshold"]
    db = sqlite3.connect(stack.state_dir / "audit.db")
    try:
        recount = db.execute(
            "SELECT m.arm, o.genuine, m.distance FROM audit_modalities m JOIN audit_outcomes o "
            "ON o.audit_id = m.audit_id WHERE m.route = 'face' AND m.assignment = 'randomised'").fetchall()
    finally:
        db.close()
    assert report["errors"], report
    for e in report["errors"]:
        gen = [d for arm, g, d in recount if arm == e["arm"] and g]
        imp = [d for arm, g, d in recount if arm == e["arm"] and not g]
        assert (e["genuine"], e["impostor"]) == (len(gen), len(imp))
        if gen:
            assert e["frr"] == pytest.approx(sum(d > threshold for d in gen) / len(gen))
        if imp:
            assert e["far"] == pytest.approx(sum(d <= threshold for d in imp) / len(imp))
    assert sum(e["genuine"] + e["impostor"] for e in report["errors"]) == len(recount) > 20
