"""`servestack audit import-outcomes FILE.csv`: label many verifications genuine or impostor at once.

The CSV has a header with ``audit_id`` and ``genuine`` (true/false, 1/0, yes/no, genuine/impostor).
Each row goes to ``POST /v1/audit/{audit_id}/outcome`` on the router (so the router's auth,
tenancy and idempotency apply), a few at a time. Repeating an import changes nothing; a row that
contradicts a stored label is a conflict and is reported, as are unknown ids and bad rows.

Exit status: 0 when every row was stored or already there, 1 otherwise, 2 when the file or the
router cannot be read at all.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import sys
from collections import Counter
from pathlib import Path

import httpx

from servestack.stackfile import DEFAULT_STATE_DIR, read_stack_file

TRUE = {"true", "1", "yes", "y", "genuine"}
FALSE = {"false", "0", "no", "n", "impostor"}
AUDIT_ID = re.compile(r"^[0-9a-f]{32}$")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="audit records: import labelled outcomes")
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser("import-outcomes", help="label verifications from a CSV (audit_id,genuine)")
    imp.add_argument("csv", type=Path, help="CSV with a header naming audit_id and genuine")
    imp.add_argument("--router-url", default=None, help="default: the running stack's router (stack.json)")
    imp.add_argument("--api-key", default=None, help="default: $SERVESTACK_API_KEY, else the stack's key")
    imp.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    imp.add_argument("--concurrency", type=int, default=8)
    imp.set_defaults(func=cmd_import)


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
