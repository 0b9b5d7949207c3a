"""Three router processes over one PostgreSQL and one policy file agree (issue: replicas agree).

Shows, against real processes on 127.0.0.1:
- one key's rate limit holds across the three (within +-20 % of burst + rate * T), where three
  independent buckets would admit about three times as much;
- a weight change through one replica is in force on all three within 10 s
  (``servestack_router_policy_version`` equal everywhere);
- two admins writing with the same ``If-Match`` at once: one 200, one 412, nothing lost;
- audit ids written by the three are unique in the shared table.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from router.auth import hash_key
from tests.canary.procs import hasher_argv, policy
from tests.support.procs import free_port, process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENT, ADMIN, LIMITED = "sk-rep-client", "sk-rep-admin", "sk-rep-limited"
RATE, BURST = 20.0, 20.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def three_routers(tmp: Path, audit_url: str) -> Iterator[list[str]]:
    keys = tmp / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [
        {"name": "client", "sha256": hash_key(CLIENT), "scopes": ["client"], "rate_per_s": 10000, "burst": 10000},
        {"name": "admin", "sha256": hash_key(ADMIN), "scopes": ["client", "admin"], "rate_per_s": 10000,
         "burst": 10000},
        {"name": "limited", "sha256": hash_key(LIMITED), "scopes": ["client"], "rate_per_s": RATE, "burst": BURST},
    ]}))
    p1, p2 = free_port(), free_port()
    v1, v2 = f"http://127.0.0.1:{p1}", f"http://127.0.0.1:{p2}"
    policy_path = tmp / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy(v1, v2, v2_weight=10)))
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(hasher_argv(p1, "1"), f"{v1}/v2/health/ready", tmp / "v1.log"))
        stack.enter_context(process(hasher_argv(p2, "2"), f"{v2}/v2/health/ready", tmp / "v2.log"))
        urls = []
        for i in range(3):
            port = free_port()
            env = {"SERVESTACK_ROUTER_HOST": "127.0.0.1", "SERVESTACK_ROUTER_PORT": str(port),
                   "SERVESTACK_ROUTER_POLICY_PATH": str(policy_path), "SERVESTACK_ROUTER_KEYS_FILE": str(keys),
                   "SERVESTACK_ROUTER_AUDIT_URL": audit_url, "SERVESTACK_ROUTER_RATELIMIT_STORE": "database",
                   "SERVESTACK_ROUTER_POLICY_POLL_S": "1", "SERVESTACK_ROUTER_LOG_LEVEL": "WARNING",
                   "OTEL_SDK_DISABLED": "true"}
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(process([sys.executable, "-m", "router"], f"{url}/healthz", tmp / f"router-{i}.log",
                                        env=env))
            urls.append(url)
        yield urls


def policy_version_metric(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("servestack_router_policy_version "):
            return float(line.split()[1])
    raise AssertionError("servestack_router_policy_version missing from /metrics")


async def offer_load(http: httpx.AsyncClient, urls: list[str], seconds: float) -> tuple[int, int]:
    """The limited key's requests back to back from two workers per router; (admitted, refused with 429).

    Closed loop: the offered rate is whatever the routers answer, far above the key's 20/s, on a
    loaded machine too (an open loop of timed sends falls behind when the test runner is starved).
    """
    statuses: list[int] = []
    end = time.monotonic() + seconds

    async def worker(url: str) -> None:
        while time.monotonic() < end:
            r = await http.get(f"{url}/v1/audit/{'0' * 32}", headers=bearer(LIMITED))
            statuses.append(r.status_code)

    await asyncio.gather(*(worker(u) for u in urls for _ in range(2)))
    assert set(statuses) <= {404, 429}, set(statuses)  # 404: admitted (no such record), 429: limited
    return statuses.count(404), statuses.count(429)


async def test_three_routers_share_limits_policy_and_audit(tmp_path: Path, postgres_server) -> None:
    with postgres_server.database() as audit_url, three_routers(tmp_path, audit_url) as urls:
        async with httpx.AsyncClient(timeout=10) as http:
            # 1. One key's limit across the three.
            start = time.monotonic()
            admitted, refused = await offer_load(http, urls, seconds=4.0)
            elapsed = time.monotonic() - start
            expected = BURST + RATE * elapsed
            # Offered well above the limit, so the limit is what decided.
            assert admitted + refused > 1.5 * expected, (admitted, refused)
            assert 0.8 * expected <= admitted <= 1.2 * expected, (admitted, expected)

            # 2. A weight change through one replica is in force on all three within 10 s.
            got = await http.get(f"{urls[0]}/admin/v1/policy", headers=bearer(ADMIN))
            r = await http.patch(f"{urls[0]}/admin/v1/routes/face/weights", json={"weights": {"v1": 50, "v2": 50}},
                                 headers={**bearer(ADMIN), "If-Match": got.headers["etag"]})
            assert r.status_code == 200, r.text
            version, etag = r.json()["version"], r.headers["etag"]
            changed = time.monotonic()
            while True:
                views = [(await http.get(f"{u}/admin/v1/policy", headers=bearer(ADMIN))) for u in urls]
                if all(v.headers["etag"] == etag for v in views):
                    break
                assert time.monotonic() - changed < 10, [v.headers["etag"] for v in views]
                await asyncio.sleep(0.2)
            assert all(v.json()["policy"]["routes"]["face"]["arms"][1]["weight"] == 50 for v in views)
            gauges = [policy_version_metric((await http.get(f"{u}/metrics")).text) for u in urls]
            assert gauges == [version] * 3

            # 3. Two admins, same If-Match, two replicas, at once: one wins, one gets 412.
            race = await asyncio.gather(*(
                http.patch(f"{u}/admin/v1/routes/face/weights", json={"weights": {"v1": w, "v2": 100 - w}},
                           headers={**bearer(ADMIN), "If-Match": etag})
                for u, w in ((urls[1], 30), (urls[2], 70))))
            assert sorted(r.status_code for r in race) == [200, 412]
            loser = next(r for r in race if r.status_code == 412)
            assert loser.json()["error"]["code"] == "version_conflict"
            winner = next(r for r in race if r.status_code == 200)
            assert yaml.safe_load((tmp_path / "policy.yaml").read_text())["routes"]["face"]["arms"][0]["weight"] \
                == winner.json()["policy"]["routes"]["face"]["arms"][0]["weight"]

            # 4. Audit ids from the three replicas are unique in the shared table.
            img = "aGVsbG8="
            r = await http.post(f"{urls[0]}/v1/enroll", json={"subject_id": "s1", "face": img}, headers=bearer(CLIENT))
            assert r.status_code == 200, r.text
            verifies = await asyncio.gather(*(
                http.post(f"{urls[i % 3]}/v1/verify", json={"subject_id": "s1", "face": img},
                          headers={**bearer(CLIENT), "X-Request-Timeout-Ms": "30000"})  # a loaded CI box
                for i in range(60)))
            ids = [v.json()["audit_id"] for v in verifies if v.status_code == 200]
            assert len(ids) == 60 and len(set(ids)) == 60, [v.text for v in verifies if v.status_code != 200]

        with psycopg.connect(audit_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            total, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM audit_records").fetchone()
            stored = {row[0] for row in conn.execute("SELECT id FROM audit_records")}
        assert total == distinct >= 60 and set(ids) <= stored
