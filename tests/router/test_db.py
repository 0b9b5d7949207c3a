"""Schema migrations of the audit database, on SQLite and PostgreSQL (the ``audit_url`` fixture)."""

from __future__ import annotations

import asyncio

from sqlalchemy import Connection, inspect, text

import router.db as db_module
from router.audit_store import AuditStore
from router.db import MIGRATIONS, Database
from router.subjects import SubjectStore
from tests.router.test_audit_store import record

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
