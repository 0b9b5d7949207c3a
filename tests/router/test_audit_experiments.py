"""Audit store for experiments (migration 3): assignment kind and policy version per row, labelled
outcomes, first assignments, the weights of each policy version. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import inspect

from router.audit_store import AuditStore
from router.db import MIGRATIONS, Database, migrate
from router.schemas import AuditRecord, ModalityResult


def record(i: int, subject: str, arm: str, created_at: float, reason: str = "sticky", version: int = 1,
           fallbacks: tuple[str, ...] = ()) -> AuditRecord:
    m = ModalityResult(modality="face", route="face", arm=arm, arm_reason=reason, backend=f"hasher-face-{arm}",
                       model_version=arm[1:], precision="int8", engine_backend="openvino", distance=10 + i % 5,
                       decision="accept", latency_ms=5.0, attempts=1, fallbacks=list(fallbacks))
    return AuditRecord(audit_id=f"{i:032x}", created_at=created_at, trace_id="ab" * 16, subject_id=subject,
                       decision="accept", threshold=24, fused_distance=m.distance, latency_ms=6.0, modalities=[m],
                       policy_version=version)


@pytest.fixture
async def store(audit_url):
    database = await asyncio.to_thread(Database, audit_url)
    yield AuditStore(database)
    await asyncio.to_thread(database.close)


async def test_kinds_versions_outcomes_and_first_assignments(store):
    t0 = time.time()
    weights = {"face": {"v1": 90.0, "v2": 10.0}}
    await store.record(record(1, "a", "v1", t0, version=1), "t1", weights)
    assert store.knows_policy(1)
    await store.record(record(2, "a", "v2", t0 + 1, version=2), "t1", {"face": {"v1": 50.0, "v2": 50.0}})
    await store.record(record(3, "b", "v2", t0 + 2, reason="pinned", version=2), "t1")
    await store.record(record(4, "b", "v1", t0 + 3, version=2), "t1")
    await store.record(record(5, "c", "v2", t0 + 4, reason="coverage", version=2), "t1")
    await store.record(record(6, "d", "v1", t0 + 5, version=2, fallbacks=("hasher-face-v2",)), "t1")
    rows = await store.experiment_rows("face", "t1")
    assert [(r.subject_id, r.kind, r.policy_version) for r in rows] == [
        ("a", "randomised", 1), ("a", "randomised", 2), ("b", "pinned", 2), ("b", "randomised", 2),
        ("c", "fallback", 2), ("d", "fallback", 2)]
    first = await store.first_assignments("face", "t1")
    assert [(f.subject_id, f.arm, f.policy_version) for f in first] == [("a", "v1", 1), ("b", "v1", 2)]
    assert [f.subject_id for f in await store.first_assignments("face", "t1", since=t0 + 0.5)] == ["b"]
    history = await store.policy_history("face")
    assert [(h.version, h.weights) for h in history] == [(1, {"v1": 90.0, "v2": 10.0}), (2, {"v1": 50.0, "v2": 50.0})]

    assert await store.set_outcome(f"{1:032x}", True) == "stored"
    assert await store.set_outcome(f"{1:032x}", True) == "unchanged"
    assert await store.set_outcome(f"{1:032x}", False) == "conflict"
    assert await store.set_outcome(f"{2:032x}", False) == "stored"
    labelled = {r.audit_id: r.genuine for r in await store.experiment_rows("face", "t1")}
    assert labelled[f"{1:032x}"] is True and labelled[f"{2:032x}"] is False and labelled[f"{3:032x}"] is None
    assert await store.existing_ids([f"{1:032x}", "f" * 32]) == {f"{1:032x}"}


async def test_first_writer_of_a_policy_version_wins(store):
    t0 = time.time()
    await store.record(record(1, "a", "v1", t0, version=7), "t1", {"face": {"v1": 1.0}})
    other = AuditStore(store.db)  # another router process on the same database
    await other.record(record(2, "b", "v1", t0 + 1, version=7), "t1", {"face": {"v1": 2.0}, "fingerprint": {"v1": 1.0}})
    assert [h.weights for h in await store.policy_history("face")] == [{"v1": 1.0}]
    assert [h.weights for h in await store.policy_history("fingerprint")] == [{"v1": 1.0}]


def test_migration_3_upgrades_a_database_made_before_it(tmp_path):
    """A database created by v1 alone (without the experiment columns) gets them, and keeps its rows."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version = 3")
        conn.exec_driver_sql("DROP TABLE audit_outcomes")
        conn.exec_driver_sql("DROP TABLE policy_versions")
        conn.exec_driver_sql("ALTER TABLE audit_modalities DROP COLUMN policy_version")
        conn.exec_driver_sql("ALTER TABLE audit_modalities DROP COLUMN assignment")
        conn.exec_driver_sql("INSERT INTO audit_modalities (audit_id, modality, route, arm, backend, model_version, "
                             "precision, distance, decision, latency_ms, created_at) "
                             "VALUES ('x', 'face', 'face', 'v1', 'b', '1', 'int8', 3, 'accept', 1.0, 1.0)")
    db.close()
    again = Database(url)  # migrates on open
    try:
        engine = again.engine
        cols = {c["name"] for c in inspect(engine).get_columns("audit_modalities")}
        assert {"policy_version", "assignment"} <= cols
        assert {"audit_outcomes", "policy_versions"} <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT assignment FROM audit_modalities WHERE audit_id = 'x'").scalar() is None
        assert migrate(engine) == MIGRATIONS[-1][0]  # idempotent: nothing left to apply
    finally:
        again.close()
