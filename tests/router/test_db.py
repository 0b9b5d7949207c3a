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
from sqlalchemy import Connection, inspect, text

import router.db as db_module
from router.audit_store import AuditStore
from router.db import MIGRATIONS, Database
from router.subjects import SubjectStore
from tests.router.support.fakes import AUTH, FakePod, Fakes, b64, write_keys
from tests.router.test_audit_store import record
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



AUDIT_ID = f"{7:032x}"
V1_AUDIT = ("INSERT INTO audit_records (id, created_at, trace_id, subject_id, decision, threshold, fused_distance, "
            "latency_ms, record, explanation, explained_at) VALUES (:id, 5.0, :trace, 's7', 'accept', 24, 3, 12, "
            ":record, '{\"text\": \"cached\"}', 6.0)")
V1_MODALITY = ("INSERT INTO audit_modalities (audit_id, modality, route, arm, backend, model_version, precision, "
               "distance, decision, latency_ms, created_at) VALUES (:id, 'face', 'face', 'v1', 'hasher-face-v1', '1', "
               "'int8', 3, 'accept', 10, 5.0)")
V1_TEMPLATE = ("INSERT INTO templates (subject_id, modality, model_version, code, source, created_at) "
               "VALUES ('alice', :modality, :version, :code, :source, 4.0)")


def _write_v1_rows(conn: Connection) -> None:
    rec = record(7, created_at=5.0)
    conn.execute(text(V1_AUDIT), {"id": rec.audit_id, "trace": rec.trace_id, "record": rec.model_dump_json()})
    conn.execute(text(V1_MODALITY), {"id": rec.audit_id})
    for modality, version, code, source in (("face", "1", "1" * 32, "enroll"), ("face", "2", "2" * 32, "migration"),
                                            ("fingerprint", "1", "3" * 32, "enroll")):
        conn.execute(text(V1_TEMPLATE), {"modality": modality, "version": version, "code": code, "source": source})


async def test_a_version_1_database_migrates_to_the_default_tenant_with_nothing_lost(audit_url, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(db_module, "MIGRATIONS", MIGRATIONS[:1])
        old = await asyncio.to_thread(Database, audit_url)
        assert old.schema_version == 1
        await old.write(_write_v1_rows)
        await asyncio.to_thread(old.close)

    db = await asyncio.to_thread(Database, audit_url)
    try:
        assert db.schema_version == MIGRATIONS[-1][0]
        audit, subjects = AuditStore(db), SubjectStore(db)
        assert await audit.get(AUDIT_ID, "default") == record(7, created_at=5.0)
        assert await audit.get_explanation(AUDIT_ID, "default") == {"text": "cached"}
        assert [(r.arm, r.decision, r.created_at) for r in await audit.experiment_rows("face", "default")] == [
            ("v1", "accept", 5.0)]
        state = await subjects.load("default", "alice")
        assert state.templates == {"face": {"1": "1" * 32, "2": "2" * 32}, "fingerprint": {"1": "3" * 32}}
        assert state.locked_until is None

        def columns(conn: Connection) -> dict[str, list[str]]:
            insp = inspect(conn)
            return {t: [c["name"] for c in insp.get_columns(t)] for t in ("templates", "audit_records")} | {
                "pk": insp.get_pk_constraint("templates")["constrained_columns"]}

        cols = await db.read(columns)
        assert cols["pk"] == ["tenant", "subject_id", "modality", "model_version"]
        assert "audit_id" in cols["templates"] and "tenant" in cols["audit_records"]
        sources = await db.read(lambda c: sorted(c.execute(text("SELECT source, audit_id FROM templates")).all()))
        assert sources == [("enroll", None), ("enroll", None), ("migration", None)]
    finally:
        await asyncio.to_thread(db.close)
