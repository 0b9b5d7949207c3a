"""Audit store contract on SQLite and PostgreSQL: migrations, group commit, experiment rows, explanation cache.

Every test taking ``db`` or ``audit_url`` runs once per backend (the ``audit_url`` fixture in
conftest.py starts a real PostgreSQL server); PostgreSQL-only checks live in
test_audit_store_postgres.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest
from sqlalchemy import Engine, select, text

from router import db as db_module
from router.audit_store import AuditStore, ExperimentRow
from router.db import Database, make_engine, schema_migrations
from router.schemas import AuditRecord, ModalityResult


def record(i: int, arm: str = "v1", decision: str = "accept", created_at: float | None = None) -> AuditRecord:
    m = ModalityResult(modality="face", route="face", arm=arm, arm_reason="sticky", backend=f"hasher-face-{arm}",
                       model_version=arm[1:], precision="int8", engine_backend="openvino", distance=3 if
                       decision == "accept" else 60, decision=decision, latency_ms=10.0 + i, attempts=1)
    return AuditRecord(audit_id=f"{i:032x}", created_at=created_at or time.time(), trace_id="ab" * 16,
                       subject_id=f"s{i}", decision=decision, threshold=24, fused_distance=m.distance,
                       latency_ms=12.0, modalities=[m])


ALL_VERSIONS = [v for v, _, _ in db_module.MIGRATIONS]


@pytest.fixture
async def db(audit_url):
    database = await asyncio.to_thread(Database, audit_url)
    yield database
    await asyncio.to_thread(database.close)


async def test_sqlite_is_wal_with_full_sync_and_migrated(tmp_path):
    db = await asyncio.to_thread(Database, f"sqlite:///{tmp_path / 'a' / 'audit.db'}")

    def probe(conn):
        return (conn.execute(text("PRAGMA journal_mode")).scalar(), conn.execute(text("PRAGMA synchronous")).scalar(),
                list(conn.execute(select(schema_migrations.c.version)).scalars()))

    try:
        assert await db.read(probe) == ("wal", 2, ALL_VERSIONS)  # synchronous 2 = FULL
    finally:
        await asyncio.to_thread(db.close)


async def test_record_get_and_experiment_rows(db):
    store = AuditStore(db)
    now = time.time()
    await asyncio.gather(*(store.record(record(i, "v1" if i % 3 else "v2", "accept" if i % 2 else "reject",
                                               now + i), "t1") for i in range(30)))
    got = await store.get(f"{4:032x}", "t1")
    assert got == record(4, "v1", "reject", now + 4)
    assert await store.get("f" * 32, "t1") is None
    rows = await store.experiment_rows("face", "t1")
    assert len(rows) == 30 and rows[0] == ExperimentRow("v2", "reject", 10.0, now, "s0", "randomised", None, 60,
                                                         None, f"{0:032x}")
    assert [r.created_at for r in rows] == sorted(r.created_at for r in rows)
    assert len(await store.experiment_rows("face", "t1", since=now + 20)) == 10
    assert await store.experiment_rows("fingerprint", "t1") == []


async def test_reads_of_another_tenant_find_nothing(db):
    store = AuditStore(db)
    await store.record(record(5, created_at=100.0), "t1")
    await store.save_explanation(f"{5:032x}", {"text": "not mine to write"}, "t2")
    assert await store.get(f"{5:032x}", "t2") is None
    assert await store.get_explanation(f"{5:032x}", "t2") is None
    assert await store.experiment_rows("face", "t2") == []
    assert await store.get_explanation(f"{5:032x}", "t1") is None  # t2's write did not land
    assert (await store.get(f"{5:032x}", "t1")).subject_id == "s5"


async def test_one_bad_write_does_not_fail_its_batch_neighbours(db):
    store = AuditStore(db)
    await store.record(record(1), "t1")
    results = await asyncio.gather(store.record(record(1), "t1"), store.record(record(2), "t1"),
                                   store.record(record(3), "t1"), return_exceptions=True)
    assert isinstance(results[0], Exception) and results[1:] == [None, None]
    assert await store.get(f"{3:032x}", "t1") is not None


async def test_explanation_cache_first_wins(db):
    store = AuditStore(db)
    await store.record(record(7), "t1")
    assert await store.get_explanation(f"{7:032x}", "t1") is None
    await store.save_explanation(f"{7:032x}", {"text": "first"}, "t1")
    await store.save_explanation(f"{7:032x}", {"text": "second"}, "t1")
    assert await store.get_explanation(f"{7:032x}", "t1") == {"text": "first"}


async def test_reopen_keeps_data_and_does_not_remigrate(audit_url):
    first = await asyncio.to_thread(Database, audit_url)
    await AuditStore(first).record(record(9), "t1")
    await asyncio.to_thread(first.close)
    again = await asyncio.to_thread(Database, audit_url)
    try:
        assert (await AuditStore(again).get(f"{9:032x}", "t1")).subject_id == "s9"
        assert again.schema_version == ALL_VERSIONS[-1]
        assert sorted(await again.read(lambda c: list(c.execute(select(schema_migrations.c.version)).scalars()))) \
            == ALL_VERSIONS
    finally:
        await asyncio.to_thread(again.close)


def test_two_routers_opening_one_new_sqlite_file_at_once(tmp_path):
    """Regression: ``PRAGMA journal_mode=WAL`` on a new file skips the busy handler, so of two routers
    connecting at once the second failed with "database is locked" (~2 % of tries: hence 150)."""
    for i in range(150):
        url = f"sqlite:///{tmp_path / f'race{i}.db'}"
        engines = [make_engine(url), make_engine(url)]
        barrier = threading.Barrier(2)

        def connect(engine: Engine, b: threading.Barrier = barrier) -> str:
            b.wait()
            with engine.connect() as conn:
                return conn.exec_driver_sql("PRAGMA journal_mode").scalar()

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            modes = list(pool.map(connect, engines, timeout=60))
        for engine in engines:
            engine.dispose()
        assert modes == ["wal", "wal"]
