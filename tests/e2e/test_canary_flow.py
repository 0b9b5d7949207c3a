"""The canary and the A/B report on the whole stack (`servestack up`, real hasher processes).

- `servestack canary start face --to v2` walks the face canary to 100 % and promotes it;
- a fault (the canary arm's backend points at a closed port) is rolled back within `threshold`;
- a precision canary (same model version, fp32 -> int8, two extra real hasher processes) is
  judged by the bit agreement of shadowed requests;
- the experiment page shows the A/B report.

Every test puts the stack's policy back as it found it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servestack import canary_cmd
from servestack.stackfile import StackInfo
from tests.support.procs import free_port, process
from tests.support.stack import CACHE_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
THRESHOLD = 2


def admin(stack: StackInfo) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin_api_key}"}


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="servestack")
    canary_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["canary", *argv])
    return args.func(args)


@contextlib.contextmanager
def policy_restored(stack: StackInfo) -> Iterator[dict]:
    router = stack.services["router"]
    original = httpx.get(f"{router}/admin/v1/policy", headers=admin(stack), timeout=10).json()["policy"]
    try:
        yield original
    finally:
        r = httpx.put(f"{router}/admin/v1/policy", json=original, headers=admin(stack), timeout=10)
        assert r.status_code == 200, r.text
        for f in (stack.state_dir / "canary").glob("face.*"):
            f.unlink()


def put_policy(stack: StackInfo, policy: dict) -> None:
    r = httpx.put(f"{stack.services['router']}/admin/v1/policy", json=policy, headers=admin(stack), timeout=10)
    assert r.status_code == 200, r.text


def face_weights(stack: StackInfo) -> dict[str, float]:
    body = httpx.get(f"{stack.services['router']}/admin/v1/policy", headers=admin(stack), timeout=10).json()
    return {a["name"]: a["weight"] for a in body["policy"]["routes"]["face"]["arms"]}


def events(stack: StackInfo) -> list[dict]:
    return json.loads((stack.state_dir / "canary" / "face.json").read_text())["events"]


def start(stack: StackInfo, *extra: str) -> int:
    return run_cli("start", "face", "--state-dir", str(stack.state_dir), "--interval-s", "8", "--step-weight", "50",
                   "--max-weight", "100", "--threshold", str(THRESHOLD), "--min-requests", "3",
                   "--max-p99-ms", "5000", "--load-rps", "3", "--subjects", "24", *extra)


def test_face_canary_is_promoted_and_the_experiment_page_shows_it(stack: StackInfo) -> None:
    with policy_restored(stack):
        assert start(stack, "--to", "v2") == 0
        assert face_weights(stack) == {"v1": 0.0, "v2": 100.0}
        kinds = [e["kind"] for e in events(stack)]
        assert kinds[0] == "start" and kinds[-1] == "promote" and kinds.count("advance") == 1

        key = {"Authorization": f"Bearer {stack.api_key}"}
        report = httpx.get(f"{stack.services['router']}/v1/experiments/face-v2", headers=key, timeout=30)
        assert report.status_code == 200, report.text
        arms = {a["arm"]: a for a in report.json()["arms"]}
        assert arms["v2"]["requests"] > 0 and arms["v1"]["requests"] > 0
        page = httpx.get(f"{stack.services['router']}/v1/experiments/face-v2/report", headers=key, timeout=30)
        # split, accept rates, latency, timeline and the sequential p-value; no DET or histograms:
        # nothing was labelled in this run.
        assert page.status_code == 200 and page.text.count("<svg") == 5


def test_faulty_face_canary_is_rolled_back(stack: StackInfo) -> None:
    with policy_restored(stack) as original:
        # The fault: a new arm whose backend listens nowhere (connection refused), falling back to v1.
        dead = free_port()  # nothing listens there
        broken = json.loads(json.dumps(original))
        broken["backends"]["hasher-face-broken"] = {"endpoints": [f"http://127.0.0.1:{dead}"],
                                                    "fallback": ["hasher-face-v1"]}
        broken["routes"]["face"]["arms"] = [{"name": "v1", "backend": "hasher-face-v1", "weight": 100},
                                            {"name": "v3", "backend": "hasher-face-broken", "weight": 0}]
        broken["routes"]["face"].pop("shadow", None)
        put_policy(stack, broken)
        assert start(stack, "--to", "v3") == 1
        assert face_weights(stack) == {"v1": 100.0, "v3": 0.0}
        judged = [e for e in events(stack) if e["kind"] not in ("start", "resume")]
        assert judged[-1]["kind"] == "rollback"
        assert len([e for e in judged if e["kind"] in ("halt", "rollback")]) == THRESHOLD


@contextlib.contextmanager
def hasher(stack: StackInfo, precision: str, log: Path) -> Iterator[str]:
    port = free_port()
    env = {"SERVESTACK_HASHER_MODEL": "face", "SERVESTACK_HASHER_VERSION": "1",
           "SERVESTACK_HASHER_PORT": str(port), "SERVESTACK_HASHER_THREADS": "1",
           "SERVESTACK_HASHER_BACKEND": "openvino", "SERVESTACK_HASHER_PRECISION": precision,
           "SERVESTACK_HASHER_CACHE_DIR": str(CACHE_DIR)}
    url = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-m", "trt_serving"], f"{url}/v2/health/ready", log, env=env, timeout_s=900,
                 stop_timeout_s=20):
        yield url


def test_precision_canary_fp32_to_int8_is_judged_by_bit_agreement(stack: StackInfo, tmp_path: Path) -> None:
    with policy_restored(stack) as original, hasher(stack, "fp32", tmp_path / "fp32.log") as fp32, \
            hasher(stack, "int8", tmp_path / "int8.log") as int8:
        policy = json.loads(json.dumps(original))
        policy["backends"]["hasher-face-v1-fp32"] = {"endpoints": [fp32], "fallback": []}
        policy["backends"]["hasher-face-v1-int8"] = {"endpoints": [int8], "fallback": ["hasher-face-v1-fp32"]}
        # Every request served by fp32 is mirrored to int8, whose code is compared bit by bit.
        policy["routes"]["face"]["arms"] = [{"name": "fp32", "backend": "hasher-face-v1-fp32", "weight": 100},
                                            {"name": "int8", "backend": "hasher-face-v1-int8", "weight": 0}]
        policy["routes"]["face"]["shadow"] = {"arm": "int8", "percent": 100}
        put_policy(stack, policy)
        code = start(stack, "--from", "fp32", "--to", "int8", "--step-weight", "50", "--max-weight", "50",
                     "--min-bit-agreement", "90")
        evs = events(stack)
        judged = [e for e in evs if e["kind"] in ("advance", "promote", "halt", "rollback")]
        assert code == 0, evs
        assert judged and all("bit agreement" in e["reason"] for e in judged)
        assert face_weights(stack) == {"fp32": 0.0, "int8": 100.0}
