"""The audit store: every verification decision, committed durably before the response is sent.

SQLAlchemy core over :class:`router.db.Database` (SQLite WAL + synchronous=FULL by default,
PostgreSQL by URL). The canary analysis and A/B reports read :meth:`AuditStore.experiment_rows`.

Every read is of one tenant: another tenant's audit id reads as missing, exactly like an unknown
one, so an id says nothing about whether it exists elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from router.db import Database, audit_modalities, audit_outcomes, audit_records, policy_versions
from router.experiments.rows import ExperimentRow, assignment_kind
from router.schemas import AuditRecord


@dataclass(frozen=True)
class FirstAssignment:
    """A subject's first randomised assignment on a route: the arm, and the policy version that chose it."""

    subject_id: str
    arm: str
    policy_version: int | None
    created_at: float


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    weights: dict[str, float]
    applied_at: float


OutcomeResult = Literal["stored", "unchanged", "conflict"]


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._policies: set[int] = set()  # policy versions whose weights this process has stored

    def knows_policy(self, version: int) -> bool:
        """True once this process has stored the weights of policy ``version`` (see :meth:`record`)."""
        return version in self._policies

    async def record(self, rec: AuditRecord, tenant: str,
                     policy_weights: Mapping[str, Mapping[str, float]] | None = None,
                     also: Callable[[Connection], None] | None = None) -> None:
        """Insert the record and its per-modality rows; returns once the commit is durable.

        ``policy_weights`` (route -> arm -> weight of ``rec.policy_version``), when given, is stored
        in the same transaction unless that version is stored already: the sample-ratio check reads
        the weights in force when each subject was assigned. ``also`` runs in the same transaction
        too (the subject throttle's update of this decision).
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
             "created_at": rec.created_at, "policy_version": rec.policy_version,
             "assignment": assignment_kind(m.arm_reason, m.fallbacks)}
            for m in rec.modalities
        ]

        version = rec.policy_version

        def op(conn: Connection) -> None:
            conn.execute(audit_records.insert().values(**row))
            if mods:
                conn.execute(audit_modalities.insert(), mods)
            if policy_weights is not None and version is not None:
                _store_policy(conn, version, policy_weights)
            if also is not None:
                also(conn)

        await self.db.write(op)
        if policy_weights is not None and version is not None:
            self._policies.add(version)

    async def get(self, audit_id: str, tenant: str) -> AuditRecord | None:
        def op(conn: Connection) -> str | None:
            return conn.execute(select(audit_records.c.record).where(audit_records.c.id == audit_id,
                                                                     audit_records.c.tenant == tenant)).scalar()

        text = await self.db.read(op)
        return AuditRecord.model_validate_json(text) if text else None

    async def experiment_rows(self, route: str, tenant: str, since: float | None = None) -> list[ExperimentRow]:
        """Rows of ``route`` in ``tenant`` (oldest first), optionally only those created at or after ``since``.

        Each carries its subject, assignment kind, policy version, distance and labelled outcome.
        """
        t, r, o = audit_modalities, audit_records, audit_outcomes

        def op(conn: Connection) -> list[ExperimentRow]:
            q = (select(t.c.arm, t.c.decision, t.c.latency_ms, t.c.created_at, r.c.subject_id, t.c.assignment,
                        t.c.policy_version, t.c.distance, o.c.genuine, t.c.audit_id)
                 .join(r, r.c.id == t.c.audit_id).outerjoin(o, o.c.audit_id == t.c.audit_id)
                 .where(t.c.tenant == tenant, t.c.route == route))
            if since is not None:
                q = q.where(t.c.created_at >= since)
            return [ExperimentRow(x.arm, x.decision, x.latency_ms, x.created_at, x.subject_id,
                                  x.assignment or "unknown", x.policy_version, x.distance,
                                  None if x.genuine is None else bool(x.genuine), x.audit_id)
                    for x in conn.execute(q.order_by(t.c.created_at))]

        return await self.db.read(op)

    async def first_assignments(self, route: str, tenant: str, since: float | None = None) -> list[FirstAssignment]:
        """Subjects of ``tenant`` whose first randomised row on ``route`` (ever) is at or after ``since``,
        oldest first."""
        t, r = audit_modalities, audit_records

        def op(conn: Connection) -> list[FirstAssignment]:
            first = (select(r.c.subject_id.label("subject_id"), func.min(t.c.created_at).label("first_at"))
                     .join(r, r.c.id == t.c.audit_id)
                     .where(t.c.tenant == tenant, t.c.route == route, t.c.assignment == "randomised")
                     .group_by(r.c.subject_id).subquery())
            q = (select(first.c.subject_id, t.c.arm, t.c.policy_version, t.c.created_at)
                 .join(r, r.c.id == t.c.audit_id)
                 .join(first, and_(first.c.subject_id == r.c.subject_id, first.c.first_at == t.c.created_at))
                 .where(t.c.tenant == tenant, t.c.route == route, t.c.assignment == "randomised"))
            if since is not None:
                q = q.where(first.c.first_at >= since)
            seen: dict[str, FirstAssignment] = {}
            for x in conn.execute(q.order_by(t.c.created_at)):
                seen.setdefault(x.subject_id, FirstAssignment(x.subject_id, x.arm, x.policy_version, x.created_at))
            return list(seen.values())

        return await self.db.read(op)

    async def set_outcome(self, audit_id: str, genuine: bool) -> OutcomeResult:
        """Label a record genuine or impostor: ``stored`` the first time, ``unchanged`` when repeated
        with the same label, ``conflict`` when it already carries the other one (kept)."""
        now = time.time()

        def op(conn: Connection) -> OutcomeResult:
            have = conn.execute(select(audit_outcomes.c.genuine).where(audit_outcomes.c.audit_id == audit_id)).scalar()
            if have is None:
                conn.execute(audit_outcomes.insert().values(audit_id=audit_id, genuine=genuine, labelled_at=now))
                return "stored"
            return "unchanged" if bool(have) == genuine else "conflict"

        return await self.db.write(op)

    async def existing_ids(self, audit_ids: Iterable[str]) -> set[str]:
        """Which of ``audit_ids`` are stored records."""
        ids = list(audit_ids)

        def op(conn: Connection) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                found |= set(conn.execute(select(audit_records.c.id).where(audit_records.c.id.in_(chunk))).scalars())
            return found

        return await self.db.read(op)

    async def policy_history(self, route: str) -> list[PolicyVersion]:
        """The recorded policy versions of ``route``: their weights and when they were applied, by version."""
        def op(conn: Connection) -> list[PolicyVersion]:
            q = (select(policy_versions.c.version, policy_versions.c.weights, policy_versions.c.applied_at)
                 .where(policy_versions.c.route == route).order_by(policy_versions.c.version))
            return [PolicyVersion(v, json.loads(w), at) for v, w, at in conn.execute(q)]

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


def _store_policy(conn: Connection, version: int, weights: Mapping[str, Mapping[str, float]]) -> None:
    """Insert the routes of ``version`` not stored yet (the first writer of a version wins).

    Replicas applying the same version write at once: the insert skips a row another replica
    committed meanwhile instead of failing the audit write on the primary key.
    """
    have = set(conn.execute(select(policy_versions.c.route).where(policy_versions.c.version == version)).scalars())
    now = time.time()
    rows = [{"version": version, "route": route, "weights": json.dumps(dict(w)), "applied_at": now}
            for route, w in weights.items() if route not in have]
    if rows:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(insert(policy_versions).on_conflict_do_nothing(index_elements=["version", "route"]), rows)
