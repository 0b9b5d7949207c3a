"""`servestack canary start` in local mode against real router processes and fake pods.

Local mode exactly as on a laptop: stack.json names the router and keys, metrics come from the
router's /metrics, weights go through its admin API, and the CLI sends verification traffic.
v2 is a pod process that injects faults (errors, or latency) or none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from servestack import canary_cmd
from tests.canary.procs import mini_stack, weights

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
THRESHOLD = 2


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="servestack")
    canary_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["canary", *argv])


def start(state_dir: Path, *extra: str) -> int:
    args = parse("start", "face", "--to", "v2", "--state-dir", str(state_dir), "--interval-s", "2",
                 "--step-weight", "25", "--max-weight", "100", "--threshold", str(THRESHOLD), "--min-requests", "3",
                 "--max-p99-ms", "150", "--load-rps", "12", "--subjects", "40", *extra)
    return args.func(args)


def events(state_dir: Path) -> list[dict]:
    return json.loads((state_dir / "canary" / "face.json").read_text())["events"]


def test_healthy_canary_is_promoted_step_by_step(tmp_path: Path, capsys) -> None:
    with mini_stack(tmp_path) as stack:
        assert start(tmp_path) == 0
        assert weights(stack.routers[0]) == {"v1": 0.0, "v2": 100.0}
    evs = events(tmp_path)
    steps = [e["canary_weight"] for e in evs if e["kind"] in ("start", "advance")]
    assert steps == [25, 50, 75, 100]
    assert evs[-1]["kind"] == "promote"
    out = capsys.readouterr().out
    assert "promoted" in out and "advance" in out
    prom = (tmp_path / "canary" / "face.prom").read_text()
    assert 'servestack_canary_weight{arm="v2",route="face"} 100.0' in prom


@pytest.mark.parametrize("fault", [["--error-rate", "0.5"], ["--delay-ms", "300"]], ids=["errors", "latency"])
def test_faulty_canary_is_rolled_back_within_threshold_intervals(tmp_path: Path, fault: list[str]) -> None:
    with mini_stack(tmp_path, fault) as stack:
        assert start(tmp_path) == 1
        assert weights(stack.routers[0]) == {"v1": 100.0, "v2": 0.0}
    evs = events(tmp_path)
    judged = [e for e in evs if e["kind"] not in ("start", "resume")]
    failing = [e for e in judged if e["kind"] in ("halt", "rollback")]
    assert judged[-1]["kind"] == "rollback" and len(failing) == THRESHOLD
    # "within threshold intervals": nothing but holds for traffic came between start and rollback
    assert all(e["kind"] in ("hold", "halt", "rollback") for e in judged)
    expected = "error rate" if fault[0] == "--error-rate" else "p99"
    assert expected in judged[-1]["reason"]


def test_status_abort_and_resume(tmp_path: Path, capsys) -> None:
    with mini_stack(tmp_path) as stack:
        assert start(tmp_path, "--max-intervals", "1") == 0  # paused after one interval, state kept
        assert weights(stack.routers[0]) == {"v1": 50.0, "v2": 50.0}
        status = parse("status", "face", "--state-dir", str(tmp_path))
        assert status.func(status) == 0
        assert "progressing, canary weight 50 %" in capsys.readouterr().out
        assert start(tmp_path, "--max-intervals", "1") == 0  # resumed where it stopped
        assert [e["kind"] for e in events(tmp_path)][-2:] == ["resume", "advance"]
        assert weights(stack.routers[0])["v2"] == 75.0
        abort = parse("abort", "face", "--state-dir", str(tmp_path))
        assert abort.func(abort) == 0
        assert weights(stack.routers[0]) == {"v1": 100.0, "v2": 0.0}
    assert events(tmp_path)[-1]["kind"] == "abort"
