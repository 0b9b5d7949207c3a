"""router.db: kill -9 the router under load, restart it: every audit id a client received is still there."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.router.support.fakes import AUTH, FakePod, Fakes, b64, write_keys
from tests.support.procs import free_port, stop, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def start_router(tmp_path: Path, port: int, hasher: str) -> subprocess.Popen:
    env = {**os.environ, "OTEL_SDK_DISABLED": "true",
           "SERVESTACK_ROUTER_PORT": str(port), "SERVESTACK_ROUTER_POLICY_PATH": str(tmp_path / "policy.yaml"),
           "SERVESTACK_ROUTER_KEYS_FILE": str(tmp_path / "keys.yaml"),
           "SERVESTACK_ROUTER_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.db'}",
           "SERVESTACK_ROUTER_LOG_LEVEL": "WARNING"}
    with open(tmp_path / f"router-{port}.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "router"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
    except BaseException:
        stop(proc)
        raise
    return proc


async def test_acknowledged_audit_records_survive_kill_9(tmp_path):
    fakes = Fakes(pods={"http://face-v1a:8080": FakePod("face", "1")})  # a pod on a real socket, in this loop
    await fakes.start()
    procs: list[subprocess.Popen] = []
    try:
        base = fakes.url("http://face-v1a:8080")
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump({
            "backends": {"hasher-face-v1": {"endpoints": [base]}},
            "routes": {"face": {"arms": [{"name": "v1", "backend": "hasher-face-v1", "weight": 100}]}},
        }))
        write_keys(tmp_path / "keys.yaml")
        port = free_port()
        router = await asyncio.to_thread(start_router, tmp_path, port, base)  # the fake pod answers meanwhile
        procs.append(router)
        url = f"http://127.0.0.1:{port}"
        acked: list[str] = []
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            r = await client.post("/v1/enroll", headers=AUTH, json={"subject_id": "k", "face": b64(b"k")})
            assert r.status_code == 200, r.text

            async def worker() -> None:
                while True:
                    try:
                        r = await client.post("/v1/verify", headers=AUTH, json={"subject_id": "k", "face": b64(b"k")})
                    except httpx.HTTPError:
                        return  # the router is gone
                    if r.status_code == 200:
                        acked.append(r.json()["audit_id"])

            tasks = [asyncio.create_task(worker()) for _ in range(16)]
            while len(acked) < 150:
                await asyncio.sleep(0.05)
            router.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        router.wait(10)
        assert len(acked) >= 150
        router = await asyncio.to_thread(start_router, tmp_path, port, base)  # the fake pod answers meanwhile
        procs.append(router)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            missing = [a for a in acked if (await client.get(f"/v1/audit/{a}", headers=AUTH)).status_code != 200]
        assert missing == []
    finally:
        await fakes.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
