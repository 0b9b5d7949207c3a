"""Subjects of a tenant: their templates, enrolment and erasure, and the brute-force throttle.

A template is one 128-bit code per (tenant, subject, modality, model version): codes of different
versions are not comparable, and the same subject id in two tenants is two subjects. Codes live
only here: never in logs, traces, audit records or subject events.

- Enrolment never overwrites silently: an existing subject is :class:`SubjectExists` unless the
  caller asked to replace it; a replacement drops every version of the enrolled modalities (a
  migrated template of the old capture must not outlive it). Each one is a subject event.
- Migration adds a template for another model version only while the template that vouched for
  the probe is still there (one statement: an erasure or replacement in between wins).
- Erasure removes every template of every version and the throttle state, and leaves an event.
- Throttle: ``max_rejects`` rejects in a row within ``window_s`` lock the subject for
  ``lockout_s``; an accept resets it. The state is a row updated by one statement in the same
  transaction as the audit record, so routers sharing the database share it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, and_, case, delete, exists, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from router.db import Database, subject_events, subject_throttle, templates
from router.errors import SubjectExists, SubjectLocked, SubjectNotFound
from router.ids import new_id

EventKind = Literal["enroll", "replace", "erase", "locked"]


@dataclass(frozen=True)
class Throttle:
    """``max_rejects`` rejects in a row within ``window_s`` lock a subject for ``lockout_s``."""

    max_rejects: int = 5
    window_s: float = 900.0
    lockout_s: float = 900.0


@dataclass(frozen=True)
class SubjectState:
    """What a verification needs of a subject, read in one go."""

    templates: dict[str, dict[str, str]]  # modality -> model version -> code (hex)
    locked_until: float | None

    def retry_after_s(self, now: float) -> int | None:
        """Seconds until the lock ends (at least 1), or None when not locked."""
        if self.locked_until is None or self.locked_until <= now:
            return None
        return max(1, math.ceil(self.locked_until - now))


@dataclass(frozen=True)
class NewTemplate:
    modality: str
    model_version: str
    code: str


@dataclass(frozen=True)
class Actor:
    """Who asked (for subject events): the key's name and the request's trace id."""

    key_name: str
    trace_id: str


def _event(tenant: str, subject_id: str, kind: EventKind, actor: Actor, detail: dict) -> dict:
    return {"id": new_id(), "tenant": tenant, "subject_id": subject_id, "kind": kind, "created_at": time.time(),
            "key_name": actor.key_name, "trace_id": actor.trace_id, "detail": json.dumps(detail, sort_keys=True)}


class SubjectStore:
    def __init__(self, db: Database, throttle: Throttle | None = None) -> None:
        self.db = db
        self.throttle = throttle or Throttle()
        self._insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert

    # --- reads -----------------------------------------------------------------------------------
    async def load(self, tenant: str, subject_id: str) -> SubjectState:
        """Every template of the subject (one statement) and its lock."""
        t, th = templates, subject_throttle

        def op(conn: Connection) -> SubjectState:
            found: dict[str, dict[str, str]] = {}
            rows = conn.execute(select(t.c.modality, t.c.model_version, t.c.code)
                                .where(t.c.tenant == tenant, t.c.subject_id == subject_id))
            for r in rows:
                found.setdefault(r.modality, {})[r.model_version] = r.code
            locked = conn.execute(select(th.c.locked_until)
                                  .where(th.c.tenant == tenant, th.c.subject_id == subject_id)).scalar()
            return SubjectState(found, locked)

        return await self.db.read(op)

    async def events(self, tenant: str, subject_id: str) -> list[tuple[EventKind, dict]]:
        """(kind, detail) of the subject's events, oldest first."""
        e = subject_events

        def op(conn: Connection) -> list[tuple[EventKind, dict]]:
            rows = conn.execute(select(e.c.kind, e.c.detail).where(e.c.tenant == tenant, e.c.subject_id == subject_id)
                                .order_by(e.c.created_at))
            return [(r.kind, json.loads(r.detail or "{}")) for r in rows]

        return await self.db.read(op)

    # --- enrolment and erasure -------------------------------------------------------------------
    async def enroll(self, tenant: str, subject_id: str, new: Iterable[NewTemplate], *, replace: bool,
                     actor: Actor) -> None:
        """Store the templates of one enrolment (one transaction). Raises :class:`SubjectExists`."""
        new = list(new)
        now = time.time()
        rows = [{"tenant": tenant, "subject_id": subject_id, "modality": n.modality, "model_version": n.model_version,
                 "code": n.code, "source": "enroll", "audit_id": None, "created_at": now} for n in new]
        modalities = sorted({n.modality for n in new})
        t = templates
        mine = and_(t.c.tenant == tenant, t.c.subject_id == subject_id)

        def op(conn: Connection) -> bool:
            existing = conn.execute(select(t.c.modality).where(mine).limit(1)).first()
            if existing is not None and not replace:
                return False  # nothing written: no error inside the group commit, raised below
            if existing is not None:
                conn.execute(delete(t).where(mine, t.c.modality.in_(modalities)))
            if rows:
                conn.execute(t.insert(), rows)
            detail = {"modalities": modalities, "versions": sorted({f"{n.modality}:{n.model_version}" for n in new})}
            kind: EventKind = "replace" if existing is not None else "enroll"
            conn.execute(subject_events.insert().values(**_event(tenant, subject_id, kind, actor, detail)))
            return True

        if not await self.db.write(op):
            raise SubjectExists(f"subject {subject_id!r} is already enrolled; send \"replace\": true "
                                "(needs the enroll:replace scope) to replace its templates")

    async def erase(self, tenant: str, subject_id: str, actor: Actor) -> int:
        """Remove every template of the subject and its throttle; the number of templates removed.

        Raises :class:`SubjectNotFound` when the subject has no template in ``tenant``.
        """
        t, th = templates, subject_throttle

        def op(conn: Connection) -> int:
            removed = conn.execute(delete(t).where(t.c.tenant == tenant, t.c.subject_id == subject_id)).rowcount
            if not removed:
                return 0  # nothing written; the 404 is raised outside the group commit
            conn.execute(delete(th).where(th.c.tenant == tenant, th.c.subject_id == subject_id))
            conn.execute(subject_events.insert().values(**_event(tenant, subject_id, "erase", actor,
                                                                 {"templates": removed})))
            return removed

        removed = await self.db.write(op)
        if not removed:
            raise SubjectNotFound(f"no subject {subject_id!r}")
        return removed

    async def migrate(self, tenant: str, subject_id: str, modality: str, model_version: str, code: str, *,
                      vouched_by: tuple[str, str], audit_id: str) -> bool:
        """Add a migrated template unless one exists; True when stored.

        ``vouched_by`` is (model version, code) of the template the genuine verification matched:
        the insert happens only while that template is still stored, in the same statement.
        """
        t = templates
        version, vouching_code = vouched_by
        still_there = exists().where(t.c.tenant == tenant, t.c.subject_id == subject_id, t.c.modality == modality,
                                     t.c.model_version == version, t.c.code == vouching_code)
        values = select(literal(tenant), literal(subject_id), literal(modality), literal(model_version),
                        literal(code), literal("migration"), literal(audit_id), literal(time.time())).where(still_there)
        stmt = self._insert(t).from_select(
            ["tenant", "subject_id", "modality", "model_version", "code", "source", "audit_id", "created_at"], values,
        ).on_conflict_do_nothing().returning(t.c.model_version)

        def op(conn: Connection) -> bool:
            # RETURNING, not rowcount: psycopg reports no row count for INSERT ... SELECT here.
            return conn.execute(stmt).first() is not None

        return await self.db.write(op)

    # --- throttle --------------------------------------------------------------------------------
    def verdict_op(self, tenant: str, subject_id: str, decision: str, now: float) -> Callable[[Connection], None]:
        """The throttle update of one decision, to run in the audit record's transaction.

        An accept deletes the row; a reject counts it (restarting the count when the window has
        passed) and sets ``locked_until`` at the ``max_rejects``-th one, in one upsert.
        """
        th, cfg = subject_throttle, self.throttle
        key = and_(th.c.tenant == tenant, th.c.subject_id == subject_id)
        if decision == "accept":
            stmt = delete(th).where(key)
        else:
            stale = th.c.window_start < now - cfg.window_s
            rejects = case((stale, 1), else_=th.c.rejects + 1)
            first_lock = now + cfg.lockout_s if cfg.max_rejects <= 1 else None
            stmt = self._insert(th).values(tenant=tenant, subject_id=subject_id, rejects=1, window_start=now,
                                           locked_until=first_lock)
            stmt = stmt.on_conflict_do_update(index_elements=[th.c.tenant, th.c.subject_id], set_={
                "rejects": rejects,
                "window_start": case((stale, now), else_=th.c.window_start),
                "locked_until": case((rejects >= cfg.max_rejects, now + cfg.lockout_s), else_=th.c.locked_until),
            })

        def op(conn: Connection) -> None:
            conn.execute(stmt)

        return op

    async def refuse_locked(self, tenant: str, subject_id: str, state: SubjectState, now: float,
                            actor: Actor) -> SubjectLocked:
        """Record a refused verification of a locked subject; the error to raise."""
        retry_after = state.retry_after_s(now) or 1
        detail = {"locked_until": state.locked_until}

        def op(conn: Connection) -> None:
            conn.execute(subject_events.insert().values(**_event(tenant, subject_id, "locked", actor, detail)))

        await self.db.write(op)
        return SubjectLocked(f"subject {subject_id!r} is locked after {self.throttle.max_rejects} rejects in a row; "
                             f"retry in {retry_after} s", retry_after_s=retry_after)
