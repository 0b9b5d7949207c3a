"""kill -9 the router under load, restart it: every audit id a client received is still there."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.router.fakes import AUTH, b64, write_keys

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def start_router(tmp_path: Path, port: int, hasher: str) -> subprocess.Popen:
    env = {**os.environ, "OTEL_SDK_DISABLED": "true",
           "SERVESTACK_ROUTER_PORT": str(port), "SERVESTACK_ROUTER_POLICY_PATH": str(tmp_path / "policy.yaml"),
           "SERVESTACK_ROUTER_KEYS_FILE": str(tmp_path / "keys.yaml"),
           "SERVESTACK_ROUTER_AUDIT_URL": f"sqlite:///{tmp_path / 'audit.db'}",
           "SERVESTACK_ROUTER_LOG_LEVEL": "WARNING"}
    with open(tmp_path / f"router-{port}.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "router"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
    return proc


async def test_acknowledged_audit_records_survive_kill_9(tmp_path):
    hasher_port = free_port()
    hasher = subprocess.Popen([sys.executable, str(HERE / "fake_hasher.py"), str(hasher_port)])
    procs = [hasher]
    try:
        wait_ready(f"http://127.0.0.1:{hasher_port}/v2/health/ready", hasher)
        base = f"http://127.0.0.1:{hasher_port}"
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump({
            "backends": {"hasher-face-v1": {"endpoints": [base]}},
            "routes": {"face": {"arms": [{"name": "v1", "backend": "hasher-face-v1", "weight": 100}]}},
        }))
        write_keys(tmp_path / "keys.yaml")
        port = free_port()
        router = start_router(tmp_path, port, base)
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
        router = start_router(tmp_path, port, base)
        procs.append(router)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            missing = [a for a in acked if (await client.get(f"/v1/audit/{a}", headers=AUTH)).status_code != 200]
        assert missing == []
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
