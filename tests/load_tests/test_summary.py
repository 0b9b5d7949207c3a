"""Summary from Locust CSV fixtures (real runs against tests/load_tests/fake_router.py), limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from load_tests.summary import (
    apply_limits,
    read_stats_csv,
    render_markdown,
    status_of,
    summarize_dir,
    violations,
    write_summary,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_stats_csv_rows_and_aggregate() -> None:
    rows, total = read_stats_csv(FIXTURES / "run_ok" / "locust_stats.csv")
    assert (total.requests, total.failures, total.p99_ms) == (306, 0, 40.0)
    assert total.rps == pytest.approx(44.24, abs=0.01)
    verify = next(r for r in rows if r.name == "/v1/verify (face)")
    assert (verify.method, verify.requests, verify.p50_ms, verify.p95_ms, verify.p99_ms) == ("POST", 115, 2, 4, 4)
    assert len(rows) == 7


def test_not_a_stats_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text((FIXTURES / "run_ok" / "locust_stats.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="Aggregated"):
        read_stats_csv(path)


def test_summary_of_a_clean_run_passes_with_arms_and_streams() -> None:
    summary = apply_limits(summarize_dir(FIXTURES / "run_ok", "locust", {"scenario": "mixed"}), 0.01, 100)
    assert summary["passed"] and summary["violations"] == []
    assert summary["stats_source"] == "locust_stats.csv"  # no final tables: Locust's own CSV
    assert summary["errors_by_status"] == {}
    arms = {(a["endpoint"], a["modality"], a["arm"]): a for a in summary["arms"]}
    assert arms[("verify", "face", "v1")]["count"] == 102 and arms[("verify", "face", "v2")]["count"] == 73
    assert arms[("verify", "face", "v1")]["share"] == pytest.approx(102 / 175)
    assert arms[("verify", "fingerprint", "v1")]["share"] == 1.0
    assert arms[("hash", "face", "v2")]["count"] == 3
    assert summary["explanations"]["stream"]["count"] == 13


def test_summary_groups_errors_by_status_and_fails_the_error_rate() -> None:
    summary = apply_limits(summarize_dir(FIXTURES / "run_503", "locust", {"scenario": "mixed"}), 0.01, None)
    assert summary["stats_source"] == "stats_final.csv"
    assert summary["errors_by_status"] == {"503": 17}
    assert summary["totals"]["error_rate"] == pytest.approx(17 / 255)
    assert not summary["passed"]
    assert summary["violations"] == ["error rate 6.67% > 1.00% (17 of 255 requests failed)"]
    # A looser limit passes the same run.
    assert apply_limits(summary, 0.1, None)["passed"]


def test_p99_limit_is_per_endpoint_and_skips_streams() -> None:
    summary = summarize_dir(FIXTURES / "run_ok", "locust", {})
    # The explanation stream (p99 43 ms) is exempt; enrol has p99 31 ms.
    assert violations(summary, None, 35) == []
    assert violations(summary, None, 30) == ["p99 of POST /v1/enroll 31 ms > 30 ms"]
    assert violations(summary, None, None) == []


def test_no_requests_is_a_failure() -> None:
    summary = summarize_dir(FIXTURES / "run_ok", "locust", {})
    summary["totals"]["requests"] = 0
    assert violations(summary, None, None) == ["no request completed"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("CatchResponseError('HTTP 503 overloaded')", "503"),
        ("CatchResponseError('HTTP 429 rate_limited')", "429"),
        ("CatchResponseError('HTTP 0 ConnectionRefusedError')", "connection"),
        ("BadStatusCode('http://127.0.0.1:8000/v1/verify', code=502)", "502"),
        ("CatchResponseError('SSE error grounding_failed')", "sse"),
        ("CatchResponseError('protocol: /v1/verify response without arms or audit id')", "protocol"),
        ("RuntimeError('boom')", "other"),
    ],
)
def test_status_of(error: str, status: str) -> None:
    assert status_of(error) == status


def test_markdown_and_json_are_written(tmp_path: Path) -> None:
    meta = {"scenario": "mixed", "host": "http://127.0.0.1:1", "users": 5, "duration_s": 8.0, "shape": None,
            "started_at": "2026-11-23T12:00:00+00:00"}
    summary = apply_limits(summarize_dir(FIXTURES / "run_503", "locust", meta), 0.01, None)
    json_path, md_path = write_summary(tmp_path, summary)
    assert json.loads(json_path.read_text())["errors_by_status"] == {"503": 17}
    text = md_path.read_text()
    assert text == render_markdown(summary)
    assert "# Load test `mixed`: FAILED" in text
    assert "5 users, 8 s, shape constant" in text
    assert "| 255 | 17 | 6.67% | 45.4 | 2 | 39 | 42 | 43 |" in text
    assert "| verify | face | v2 | 50 | 37.3% |" in text
    assert "max error rate 0.01, max p99 none: error rate 6.67% > 1.00%" in text
    assert "By status: 503: 17" in text
    assert "| time to first event | 15 | 7 |" in text
