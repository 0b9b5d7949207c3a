"""The audit store: every verification decision, committed durably before the response is sent.

SQLAlchemy core over :class:`router.db.Database` (SQLite WAL + synchronous=FULL by default,
PostgreSQL by URL). The canary analysis and A/B reports read :meth:`AuditStore.experiment_rows`.

Every read is of one tenant: another tenant's audit id reads as missing, exactly like an unknown
one, so an id says nothing about whether it exists elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, select, update

from router.db import Database, audit_modalities, audit_records
from router.schemas import AuditRecord


@dataclass(frozen=True)
class ExperimentRow:
    """One verified modality on a route.

    ``decision`` is that modality's own decision (its distance <= threshold), so that it is
    attributable to the arm; ``latency_ms`` is the hasher call of that modality.
    """

    arm: str
    decision: Literal["accept", "reject"]
    latency_ms: float
    created_at: float


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, rec: AuditRecord, tenant: str,
                     also: Callable[[Connection], None] | None = None) -> None:
        """Insert the record and its per-modality rows; returns once the commit is durable.

        ``also`` runs in the same transaction (the subject throttle's update of this decision).
        """
        row = {"tenant": tenant,
            "id": rec.audit_id, "created_at": rec.created_at, "trace_id": rec.trace_id,
            "subject_id": rec.subject_id, "decision": rec.decision, "threshold": rec.threshold,
            "fused_distance": rec.fused_distance, "latency_ms": rec.latency_ms,
            "record": rec.model_dump_json(),
        }
        mods = [
            {"tenant": tenant, "audit_id": rec.audit_id, "modality": m.modality, "route": m.route, "arm": m.arm,
             "backend": m.backend, "model_version": m.model_version, "precision": m.precision,
             "distance": m.distance, "decision": m.decision, "latency_ms": m.latency_ms,
             "created_at": rec.created_at}
            for m in rec.modalities
        ]

        def op(conn: Connection) -> None:
            conn.execute(audit_records.insert().values(**row))
            if mods:
                conn.execute(audit_modalities.insert(), mods)
            if also is not None:
                also(conn)

        await self.db.write(op)

    async def get(self, audit_id: str, tenant: str) -> AuditRecord | None:
        def op(conn: Connection) -> str | None:
            return conn.execute(select(audit_records.c.record).where(audit_records.c.id == audit_id,
                                                                     audit_records.c.tenant == tenant)).scalar()

        text = await self.db.read(op)
        return AuditRecord.model_validate_json(text) if text else None

    async def experiment_rows(self, route: str, tenant: str,
                              since: float | None = None) -> list[ExperimentRow]:
        """Rows of ``route`` in ``tenant`` (oldest first), optionally only those created at or after ``since``."""
        t = audit_modalities

        def op(conn: Connection) -> list[ExperimentRow]:
            q = select(t.c.arm, t.c.decision, t.c.latency_ms, t.c.created_at).where(t.c.tenant == tenant,
                                                                                    t.c.route == route)
            if since is not None:
                q = q.where(t.c.created_at >= since)
            return [ExperimentRow(r.arm, r.decision, r.latency_ms, r.created_at)
                    for r in conn.execute(q.order_by(t.c.created_at))]

        return await self.db.read(op)

    async def get_explanation(self, audit_id: str, tenant: str) -> dict | None:
        def op(conn: Connection) -> str | None:
            return conn.execute(
                select(audit_records.c.explanation).where(audit_records.c.id == audit_id,
                                                          audit_records.c.tenant == tenant)
            ).scalar()

        text = await self.db.read(op)
        return json.loads(text) if text else None

    async def save_explanation(self, audit_id: str, explanation: dict, tenant: str) -> None:
        """Cache an explanation; the first one stored wins (later generations are not kept)."""
        text = json.dumps(explanation)
        now = time.time()

        def op(conn: Connection) -> None:
            conn.execute(
                update(audit_records)
                .where(audit_records.c.id == audit_id, audit_records.c.tenant == tenant,
                       audit_records.c.explanation.is_(None))
                .values(explanation=text, explained_at=now)
            )

        await self.db.write(op)
