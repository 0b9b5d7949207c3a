"""`servestack audit prune --older-than 90d`: delete old audit records in batches.

Removes audit records (with their per-modality rows) and subject events created before the
cutoff, ``--batch-size`` rows per transaction, so that a router writing to the same database is
never blocked for long. Templates are not touched (erase a subject with DELETE /v1/subjects/{id});
a migrated template keeps the id of the record that produced it even once that record is pruned.

    servestack audit prune --older-than 90d                    # the local stack's audit.db
    servestack audit prune --older-than 30d --audit-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, delete, select

from router.db import audit_modalities, audit_records, make_engine, migrate, subject_events
from servestack.stackfile import DEFAULT_STATE_DIR

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s`` -> seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive age like 90d, 12h, 30m or 45s")
    return float(match[1]) * _UNITS[match[2]]


def _batches(engine: Engine, table: Table, key, created_at, cutoff: float, batch_size: int,
             also: Callable[[Connection, list], None] | None = None) -> int:
    removed = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(select(key).where(created_at < cutoff).limit(batch_size)).scalars())
            if not ids:
                return removed
            if also is not None:
                also(conn, ids)
            conn.execute(delete(table).where(key.in_(ids)))
        removed += len(ids)


def prune(engine: Engine, older_than_s: float, batch_size: int = 1000, now: float | None = None) -> dict[str, int]:
    """Delete audit records and subject events older than ``older_than_s``; counts per table."""
    cutoff = (time.time() if now is None else now) - older_than_s
    migrate(engine)  # an old database is brought to the schema this code reads (as a router would)

    def modalities(conn: Connection, ids: list) -> None:
        conn.execute(delete(audit_modalities).where(audit_modalities.c.audit_id.in_(ids)))

    records = _batches(engine, audit_records, audit_records.c.id, audit_records.c.created_at, cutoff, batch_size,
                       modalities)
    events = _batches(engine, subject_events, subject_events.c.id, subject_events.c.created_at, cutoff, batch_size)
    return {"audit_records": records, "subject_events": events}


def default_audit_url(state_dir: Path) -> str:
    """The router's setting if exported, else the local stack's SQLite file."""
    return os.environ.get("SERVESTACK_ROUTER_AUDIT_URL") or f"sqlite:///{(state_dir / 'audit.db').resolve()}"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="maintain the audit database", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True
    q = sub.add_parser("prune", help="delete audit records older than an age, in batches",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--older-than", type=parse_age, required=True, help="age like 90d, 12h, 30m")
    q.add_argument("--audit-url", default=None,
                   help="default: $SERVESTACK_ROUTER_AUDIT_URL, else STATE_DIR/audit.db")
    q.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="the local stack's state dir")
    q.add_argument("--batch-size", type=int, default=1000, help="rows deleted per transaction")
    q.set_defaults(func=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise SystemExit("--batch-size must be >= 1")
    engine = make_engine(args.audit_url or default_audit_url(args.state_dir))
    try:
        counts = prune(engine, args.older_than, args.batch_size)
    finally:
        engine.dispose()
    print(f"pruned {counts['audit_records']} audit records and {counts['subject_events']} subject events "  # noqa: T201
          f"older than {args.older_than / 86400:g} days")
    return 0
