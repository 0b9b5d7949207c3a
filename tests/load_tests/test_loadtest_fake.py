"""Real Locust runs through `servestack loadtest` against a stand-in router process.

tests/load_tests/fake_router.py serves the router's API shapes (50/50 face arms, 404 for a
subject that was never enrolled, SSE explanations), so these runs check the plumbing: users,
enrolment before verification, streaming, shapes, final tables, per-arm summary and the exit
status. tests/e2e/test_loadtest_short.py runs against the real stack.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from servestack import loadtest_cmd
from tests.support.procs import stop

FAKE = Path(__file__).parent / "fake_router.py"
KEY = "sk-test-fake"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _start_fake(*extra: str) -> tuple[subprocess.Popen[str], str]:
    """The fake on a free port; (process, base URL)."""
    proc = subprocess.Popen([sys.executable, str(FAKE), "--api-key", KEY, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        output = proc.stdout.read()
        stop(proc)
        pytest.fail(f"fake router did not start: {line}{output}")
    return proc, f"http://127.0.0.1:{line.split()[-1]}"


@pytest.fixture
def fake_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = _start_fake()
    yield proc, url
    stop(proc)


@pytest.fixture
def fake_router(fake_process: tuple[subprocess.Popen[str], str]) -> str:
    return fake_process[1]


@pytest.fixture
def failing_fake_router() -> Iterator[str]:
    proc, url = _start_fake("--hash-status", "503")
    yield url
    stop(proc)


def _loadtest(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="servestack")
    loadtest_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["loadtest", *argv])
    return int(args.func(args))


def test_mixed_run_passes_with_both_arms_and_streams(fake_router: str, tmp_path: Path) -> None:
    out = tmp_path / "mixed"
    rc = _loadtest("--scenario", "mixed", "--users", "5", "--duration", "6s", "--host", fake_router,
                   "--api-key", KEY, "--out", str(out), "--think-time", "0.05", "0.2", "--max-p99-ms", "2000")
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0, summary["violations"]
    assert summary["stats_source"] == "stats_final.csv"
    assert summary["totals"]["failures"] == 0 and summary["totals"]["requests"] > 50
    names = {e["name"] for e in summary["endpoints"]}
    assert {"/v1/enroll", "/v1/verify (face)", "/v1/audit/{id}/explanation"} <= names
    face_arms = {a["arm"]: a["count"] for a in summary["arms"] if a["endpoint"] == "verify" and a["modality"] == "face"}
    assert set(face_arms) == {"v1", "v2"} and min(face_arms.values()) > 0
    verified = sum(e["requests"] for e in summary["endpoints"] if e["name"].startswith("/v1/verify"))
    assert sum(face_arms.values()) == verified  # every verification attributed to an arm
    streams = summary["explanations"]
    assert streams["stream"]["count"] > 0
    # The fake streams ~12 words 5 ms apart: the first event arrives well before the end.
    assert streams["ttft"]["p50_ms"] < streams["stream"]["p50_ms"]
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "locust_stats.csv").exists()
    assert "PASSED" in (out / "summary.md").read_text()


@pytest.fixture
def locking_fake_router() -> Iterator[str]:
    proc, url = _start_fake("--lock-every", "4")
    yield url
    stop(proc)


def test_labelled_run_posts_every_outcome_and_a_subject_lock_is_no_failure(locking_fake_router: str,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "labelled"
    rc = _loadtest("--scenario", "labelled", "--users", "3", "--duration", "5s", "--host", locking_fake_router,
                   "--api-key", KEY, "--out", str(out), "--think-time", "0.01", "0.05", "--subjects", "20",
                   "--max-error-rate", "0")
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0, summary["violations"]
    assert summary["totals"]["failures"] == 0, summary["errors"]
    by_name = {e["name"]: e["requests"] for e in summary["endpoints"]}
    verified = sum(n for name, n in by_name.items() if name.startswith("/v1/verify"))
    outcomes = by_name["/v1/audit/{id}/outcome"]
    assert 0 < outcomes < verified  # every verification that got through was labelled; locked ones not


def test_errors_fail_the_run_with_a_shape(failing_fake_router: str, tmp_path: Path) -> None:
    out = tmp_path / "hash"
    rc = _loadtest("--scenario", "hash", "--shape", "spike", "--users", "3", "--duration", "5s",
                   "--host", failing_fake_router, "--api-key", KEY, "--out", str(out), "--think-time", "0.05", "0.1")
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 1
    assert summary["shape"] == "spike"
    assert summary["totals"]["requests"] == summary["totals"]["failures"] > 0
    assert list(summary["errors_by_status"]) == ["503"]
    assert summary["violations"][0].startswith("error rate 100.00% > 1.00%")


def test_wrong_key_is_reported_as_401(fake_router: str, tmp_path: Path) -> None:
    out = tmp_path / "auth"
    rc = _loadtest("--scenario", "verify", "--users", "1", "--duration", "2s", "--host", fake_router,
                   "--api-key", "wrong", "--out", str(out), "--max-error-rate", "-1")
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0  # no error-rate limit
    assert summary["errors_by_status"] == {"401": summary["totals"]["failures"]}


def test_a_running_stack_is_found_through_its_stack_file(fake_process: tuple[subprocess.Popen[str], str],
                                                          tmp_path: Path) -> None:
    """Without --host: the router and key of the stack in --state-dir (launcher pid alive, /readyz 200)."""
    proc, url = fake_process
    state = tmp_path / "state"
    state.mkdir()
    (state / "stack.json").write_text(json.dumps({"services": {"router": url}, "api_key": KEY,
                                                  "admin_api_key": "a", "pid": proc.pid}))
    out = tmp_path / "found"
    rc = _loadtest("--scenario", "verify", "--users", "2", "--duration", "2s", "--state-dir", str(state),
                   "--no-start", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0, summary["violations"]
    assert (summary["target"], summary["host"]) == ("running", url)
    assert summary["totals"]["requests"] > 0 and summary["totals"]["failures"] == 0
