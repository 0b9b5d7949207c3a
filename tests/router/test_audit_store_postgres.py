"""Audit store on a real PostgreSQL server, and migrations when several routers start at once.

The contract tests of test_audit_store.py already run against PostgreSQL (the ``audit_url``
fixture); these add what only a server shows: the psycopg dialect end to end through the router,
and migrations racing from two processes' worth of engines on one database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

from sqlalchemy import Column, Connection, Integer, MetaData, Table, inspect, select, text

import router.db as db_module
from router.audit_store import AuditStore, ExperimentRow
from router.db import Database, schema_migrations
from tests.router.support.fakes import ADMIN, AUTH, b64, running_router
from tests.router.test_audit_store import record

BASE_VERSIONS = [v for v, _, _ in db_module.MIGRATIONS]
NEXT = max(BASE_VERSIONS) + 1  # a test migration after the real ones


async def test_postgres_backend_is_a_real_server_with_the_schema(postgres_server):
    with postgres_server.database() as url:
        db = await asyncio.to_thread(Database, url)
        try:
            def probe(conn: Connection):
                return (conn.dialect.name, conn.dialect.driver, conn.execute(text("SHOW server_version_num")).scalar(),
                        sorted(inspect(conn).get_table_names()),
                        list(conn.execute(select(schema_migrations.c.version)).scalars()))

            dialect, driver, version_num, tables, versions = await db.read(probe)
            assert (dialect, driver) == ("postgresql", "psycopg") and int(version_num) >= 120000
            assert {"audit_modalities", "audit_records", "audit_outcomes", "policy_versions", "rate_buckets",
                    "schema_migrations", "templates"} <= set(tables)
            assert sorted(versions) == BASE_VERSIONS
        finally:
            await asyncio.to_thread(db.close)


def _race_migrations(url: str, monkeypatch) -> tuple[list[Database], list[int]]:
    """Open two Databases on ``url`` at the same instant, with a slow extra migration appended.

    The slow step holds the migration transaction open long enough that, without a lock across
    connections, both would find it unapplied and both run it.
    """
    runs: list[int] = []
    probe_table = Table("migration_probe", MetaData(), Column("n", Integer, primary_key=True))

    def slow_v2(conn: Connection) -> None:
        runs.append(threading.get_ident())
        probe_table.create(conn)  # no checkfirst: a second run fails loudly
        time.sleep(0.5)

    monkeypatch.setattr(db_module, "MIGRATIONS", [*db_module.MIGRATIONS, (NEXT, "test: slow step", slow_v2)])
    barrier = threading.Barrier(2)

    def open_db() -> Database:
        barrier.wait()
        return Database(url)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(open_db) for _ in range(2)]
        done = [f.result(timeout=60) for f in futures]
    return done, runs


async def test_routers_starting_together_apply_each_migration_once(audit_url, monkeypatch):
    dbs, runs = await asyncio.to_thread(_race_migrations, audit_url, monkeypatch)
    try:
        assert len(runs) == 1
        assert [d.schema_version for d in dbs] == [NEXT, NEXT]
        versions = await dbs[0].read(
            lambda c: list(c.execute(select(schema_migrations.c.version).order_by(schema_migrations.c.version))
                           .scalars()))
        assert versions == [*BASE_VERSIONS, NEXT]
    finally:
        for d in dbs:
            await asyncio.to_thread(d.close)


async def test_two_stores_write_one_database_concurrently(audit_url):
    first, second = await asyncio.gather(asyncio.to_thread(Database, audit_url), asyncio.to_thread(Database, audit_url))
    try:
        now = time.time()
        stores = [AuditStore(first), AuditStore(second)]
        await asyncio.gather(*(stores[i % 2].record(record(i, created_at=now + i), "t1") for i in range(40)))
        rows = await stores[1].experiment_rows("face", "t1")
        assert len(rows) == 40
        assert rows[0] == ExperimentRow("v1", "accept", 10.0, now, "s0", "randomised", None, 3, None, f"{0:032x}")
        assert (await stores[0].get(f"{39:032x}", "t1")).subject_id == "s39"
    finally:
        await asyncio.to_thread(first.close)
        await asyncio.to_thread(second.close)


async def test_router_on_postgres_enrolls_verifies_and_audits(tmp_path, postgres_server):
    pin_v1 = {**AUTH, "X-ServeStack-Arm": "face=v1"}
    with postgres_server.database() as url:
        async with running_router(tmp_path, audit_url=url) as router:
            r = await router.client.post("/v1/enroll", headers=pin_v1, json={"subject_id": "pg", "face": b64(b"pg")})
            assert r.status_code == 200, r.text
            # Re-enrolling is refused unless asked to replace (the admin key holds enroll:replace).
            r = await router.client.post("/v1/enroll", headers=pin_v1, json={"subject_id": "pg", "face": b64(b"pg")})
            assert r.status_code == 409, r.text
            r = await router.client.post("/v1/enroll", headers={**ADMIN, "X-ServeStack-Arm": "face=v1"},
                                         json={"subject_id": "pg", "face": b64(b"pg"), "replace": True})
            assert r.status_code == 200, r.text
            r = await router.client.post("/v1/verify", headers=pin_v1, json={"subject_id": "pg", "face": b64(b"pg")})
            body = r.json()
            assert r.status_code == 200 and body["decision"] == "accept" and body["fused_distance"] == 0
            audit = await router.client.get(f"/v1/audit/{body['audit_id']}", headers=AUTH)
            assert audit.status_code == 200 and audit.json()["trace_id"] == body["trace_id"]
            rows = await router.app.state.audit_store.experiment_rows("face", "default")
            assert [(row.arm, row.decision) for row in rows] == [("v1", "accept")]
