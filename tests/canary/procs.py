"""Real processes for the canary tests: fake hasher pods and real routers on 127.0.0.1.

``mini_stack`` starts what the canary needs of `servestack up` (a real ``python -m router`` and
one fake pod per face version, with fault injection on v2) and writes ``stack.json`` like the
launcher does, so the CLI's local mode finds it exactly as on a laptop.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from router.auth import hash_key
from servestack.stackfile import StackInfo, write_stack_file
from tests.support.procs import free_port, process

HERE = Path(__file__).parent
REPO = HERE.parents[2]
CLIENT_KEY, ADMIN_KEY = "sk-canary-client", "sk-canary-admin"


@dataclass(frozen=True)
class MiniStack:
    info: StackInfo
    routers: list[str]
    policy_path: Path


def hasher_argv(port: int, version: str, *extra: str) -> list[str]:
    return [sys.executable, str(HERE / "fake_hasher_proc.py"), "--port", str(port), "--version", version, *extra]


def policy(v1: str, v2: str, *, v2_weight: float = 0, v2_version_arm: str = "v2", shadow: float = 0) -> dict:
    route: dict = {"experiment": "face-v2", "sticky_key": "subject_id", "arms": [
        {"name": "v1", "backend": "hasher-face-v1", "weight": 100 - v2_weight},
        {"name": v2_version_arm, "backend": "hasher-face-v2", "weight": v2_weight}]}
    if shadow:
        route["shadow"] = {"arm": v2_version_arm, "percent": shadow}
    return {"backends": {"hasher-face-v1": {"endpoints": [v1], "fallback": []},
                         "hasher-face-v2": {"endpoints": [v2], "fallback": ["hasher-face-v1"]}},
            "routes": {"face": route}}


@contextlib.contextmanager
def mini_stack(tmp: Path, v2_args: Sequence[str] = (), *, replicas: int = 1, v2_version: str = "2",
               shadow: float = 0) -> Iterator[MiniStack]:
    """Fake face v1/v2 pods + ``replicas`` real routers sharing one policy file; stack.json in ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    keys = tmp / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"name": "client", "sha256": hash_key(CLIENT_KEY), "scopes": ["client"], "rate_per_s": 10000, "burst": 10000},
        {"name": "admin", "sha256": hash_key(ADMIN_KEY), "scopes": ["client", "admin"], "rate_per_s": 10000,
         "burst": 10000}]}))
    p1, p2 = free_port(), free_port()
    v1, v2 = f"http://127.0.0.1:{p1}", f"http://127.0.0.1:{p2}"
    policy_path = tmp / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy(v1, v2, shadow=shadow)))
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(hasher_argv(p1, "1"), f"{v1}/v2/health/ready", tmp / "v1.log"))
        stack.enter_context(process(hasher_argv(p2, v2_version, *v2_args), f"{v2}/v2/health/ready", tmp / "v2.log"))
        routers = []
        for i in range(replicas):
            port = free_port()
            env = {"SERVESTACK_ROUTER_HOST": "127.0.0.1", "SERVESTACK_ROUTER_PORT": str(port),
                   "SERVESTACK_ROUTER_POLICY_PATH": str(policy_path), "SERVESTACK_ROUTER_KEYS_FILE": str(keys),
                   "SERVESTACK_ROUTER_AUDIT_URL": f"sqlite:///{tmp / f'audit-{i}.db'}",
                   "SERVESTACK_ROUTER_POLICY_POLL_S": "0.2", "SERVESTACK_ROUTER_HEALTH_INTERVAL_S": "1",
                   "SERVESTACK_ROUTER_OUTLIER_CONSECUTIVE_FAILURES": "1000",  # keep the faulty canary in play
                   "SERVESTACK_ROUTER_LOG_LEVEL": "WARNING"}
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(process([sys.executable, "-m", "router"], f"{url}/healthz", tmp / f"router-{i}.log",
                                        env=env))
            routers.append(url)
        info = StackInfo(services={"router": routers[0], "hasher-face-v1": v1, "hasher-face-v2": v2},
                         api_key=CLIENT_KEY, admin_api_key=ADMIN_KEY, state_dir=tmp)
        write_stack_file(info)
        yield MiniStack(info, routers, policy_path)


def weights(router_url: str) -> dict[str, float]:
    body = httpx.get(f"{router_url}/admin/v1/policy", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    return {a["name"]: a["weight"] for a in body["policy"]["routes"]["face"]["arms"]}
