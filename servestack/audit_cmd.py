"""`servestack audit import-outcomes FILE.csv`: label many verifications genuine or impostor at once.

The CSV has a header with ``audit_id`` and ``genuine`` (true/false, 1/0, yes/no, genuine/impostor).
Each row goes to ``POST /v1/audit/{audit_id}/outcome`` on the router (so the router's auth,
tenancy and idempotency apply), a few at a time. Repeating an import changes nothing; a row that
contradicts a stored label is a conflict and is reported, as are unknown ids and bad rows.

Exit status: 0 when every row was stored or already there, 1 otherwise, 2 when the file or the
router cannot be read at all.

`servestack audit prune --older-than 90d`: delete old audit records in batches. Removes audit
records (with their per-modality rows and labelled outcomes) and subject events created before
the cutoff, ``--batch-size`` rows per transaction, so that a router writing to the same database
is never blocked for long. Templates are not touched (erase a subject with DELETE
/v1/subjects/{id}); a migrated template keeps the id of the record that produced it even once
that record is pruned. It works on the database directly (``--audit-url``, default
``$SERVESTACK_ROUTER_AUDIT_URL``, else the local stack's ``audit.db``).

    servestack audit prune --older-than 90d
    servestack audit prune --older-than 30d --audit-url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Connection, Engine, Table, delete, select

from router.db import audit_modalities, audit_outcomes, audit_records, make_engine, migrate, subject_events
from servestack.stackfile import DEFAULT_STATE_DIR, read_stack_file

TRUE = {"true", "1", "yes", "y", "genuine"}
FALSE = {"false", "0", "no", "n", "impostor"}
AUDIT_ID = re.compile(r"^[0-9a-f]{32}$")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="audit records: import labelled outcomes, prune old records")
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser("import-outcomes", help="label verifications from a CSV (audit_id,genuine)")
    imp.add_argument("csv", type=Path, help="CSV with a header naming audit_id and genuine")
    imp.add_argument("--router-url", default=None, help="default: the running stack's router (stack.json)")
    imp.add_argument("--api-key", default=None, help="default: $SERVESTACK_API_KEY, else the stack's key")
    imp.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    imp.add_argument("--concurrency", type=int, default=8)
    imp.set_defaults(func=cmd_import)
    q = sub.add_parser("prune", help="delete audit records older than an age, in batches",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--older-than", type=parse_age, required=True, help="age like 90d, 12h, 30m")
    q.add_argument("--audit-url", default=None,
                   help="default: $SERVESTACK_ROUTER_AUDIT_URL, else STATE_DIR/audit.db")
    q.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="the local stack's state dir")
    q.add_argument("--batch-size", type=int, default=1000, help="rows deleted per transaction")
    q.set_defaults(func=run_prune)


def parse_rows(lines: list[str]) -> tuple[list[tuple[int, str, bool]], list[str]]:
    """(line, audit_id, genuine) per valid row, and a message per invalid one (pure)."""
    reader = csv.DictReader(lines)
    fields = {f.strip().lower() for f in reader.fieldnames or []}
    if not {"audit_id", "genuine"} <= fields:
        return [], [f"header must name audit_id and genuine, got {reader.fieldnames}"]
    rows, bad = [], []
    for n, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        audit_id, label = row["audit_id"].lower(), row["genuine"].lower()
        if not AUDIT_ID.match(audit_id):
            bad.append(f"line {n}: audit_id {row['audit_id'][:40]!r} is not 32 hex digits")
        elif label not in TRUE | FALSE:
            bad.append(f"line {n}: genuine {row['genuine'][:20]!r} is not true/false")
        else:
            rows.append((n, audit_id, label in TRUE))
    return rows, bad


async def import_outcomes(http: httpx.AsyncClient, router_url: str, api_key: str,
                          rows: list[tuple[int, str, bool]], concurrency: int = 8) -> tuple[Counter, list[str]]:
    """Post every row; (counts by result, a message per row that was not stored or already there)."""
    counts: Counter = Counter()
    problems: list[str] = []
    gate = asyncio.Semaphore(max(1, concurrency))
    headers = {"Authorization": f"Bearer {api_key}"}

    async def one(line: int, audit_id: str, genuine: bool) -> None:
        async with gate:
            resp = await http.post(f"{router_url.rstrip('/')}/v1/audit/{audit_id}/outcome",
                                   json={"genuine": genuine}, headers=headers, timeout=30)
        if resp.status_code == 200:
            counts["stored" if resp.json().get("stored") else "unchanged"] += 1
            return
        code = ""
        try:
            code = resp.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = resp.text[:80]
        counts["conflict" if resp.status_code == 409 else "not_found" if resp.status_code == 404 else "failed"] += 1
        problems.append(f"line {line}: {audit_id}: HTTP {resp.status_code} {code}")

    await asyncio.gather(*(one(*r) for r in rows))
    return counts, problems


def cmd_import(args: argparse.Namespace) -> int:
    try:
        lines = args.csv.read_text().splitlines()
    except OSError as exc:
        print(f"cannot read {args.csv}: {exc}", file=sys.stderr)
        return 2
    router, key = args.router_url, args.api_key or os.environ.get("SERVESTACK_API_KEY")
    if not router or not key:
        try:
            stack = read_stack_file(args.state_dir)
        except FileNotFoundError:
            print("no router: pass --router-url and --api-key, or start the stack (`servestack up`)", file=sys.stderr)
            return 2
        router, key = router or stack.services.get("router"), key or stack.api_key
    rows, bad = parse_rows(lines)

    async def run() -> tuple[Counter, list[str]]:
        async with httpx.AsyncClient() as http:
            return await import_outcomes(http, router, key, rows, args.concurrency)

    try:
        counts, problems = asyncio.run(run())
    except httpx.HTTPError as exc:
        print(f"router {router} unreachable: {exc}", file=sys.stderr)
        return 2
    for msg in bad + problems:
        print(msg, file=sys.stderr)
    counts["invalid"] = len(bad)
    print(", ".join(f"{k} {counts[k]}" for k in ("stored", "unchanged", "conflict", "not_found", "failed", "invalid")))
    return 0 if not bad and not problems else 1


# --- prune ---------------------------------------------------------------------------------------
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
        conn.execute(delete(audit_outcomes).where(audit_outcomes.c.audit_id.in_(ids)))

    records = _batches(engine, audit_records, audit_records.c.id, audit_records.c.created_at, cutoff, batch_size,
                       modalities)
    events = _batches(engine, subject_events, subject_events.c.id, subject_events.c.created_at, cutoff, batch_size)
    return {"audit_records": records, "subject_events": events}


def default_audit_url(state_dir: Path) -> str:
    """The router's setting if exported, else the local stack's SQLite file."""
    return os.environ.get("SERVESTACK_ROUTER_AUDIT_URL") or f"sqlite:///{(state_dir / 'audit.db').resolve()}"


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
