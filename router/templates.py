"""Enrolled templates: one 128-bit code per (subject, modality, model version).

Codes of different model versions are not comparable (docs/ARCHITECTURE.md), so a template is stored under
the version that produced it. Codes live only here: never in logs, traces or audit records.
"""

from __future__ import annotations

import time
from typing import Literal

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from router.db import Database, templates


class TemplateStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._dialect = db.engine.dialect.name

    async def get(self, subject_id: str, modality: str) -> dict[str, str]:
        """model_version -> code (hex) for this subject and modality."""
        t = templates

        def op(conn: Connection) -> dict[str, str]:
            rows = conn.execute(
                select(t.c.model_version, t.c.code).where(t.c.subject_id == subject_id, t.c.modality == modality)
            )
            return {r.model_version: r.code for r in rows}

        return await self.db.read(op)

    async def put(self, subject_id: str, modality: str, model_version: str, code: str,
                  source: Literal["enroll", "migration"]) -> None:
        """Store a template. Enrolment replaces; migration never overwrites an existing one."""
        values = {"subject_id": subject_id, "modality": modality, "model_version": model_version,
                  "code": code, "source": source, "created_at": time.time()}
        insert = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(templates).values(**values)
        keys = [templates.c.subject_id, templates.c.modality, templates.c.model_version]
        if source == "enroll":
            stmt = insert.on_conflict_do_update(
                index_elements=keys, set_={"code": code, "source": source, "created_at": values["created_at"]}
            )
        else:
            stmt = insert.on_conflict_do_nothing(index_elements=keys)

        def op(conn: Connection) -> None:
            conn.execute(stmt)

        await self.db.write(op)
