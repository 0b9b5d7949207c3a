"""`servestack audit import-outcomes` (CSV parsing, a real import against the in-process router) and
`servestack audit prune` (old audit records and subject events go in batches, nothing else)."""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest
from sqlalchemy import func, select

from router.audit_store import AuditStore
from router.db import Database, audit_modalities, audit_records, make_engine, subject_events, templates
from router.subjects import Actor, NewTemplate, SubjectStore
from servestack.audit_cmd import import_outcomes, parse_age, parse_rows, prune
from servestack.cli import build_parser, main
from tests.router.conftest import audit_url, postgres_server, router  # noqa: F401  (fixtures)
from tests.router.support.fakes import AUTH, CLIENT_KEY, b64
from tests.router.test_audit_store import record


def test_parse_rows_accepts_the_usual_spellings_and_names_bad_lines() -> None:
    rows, bad = parse_rows(["audit_id,genuine", f"{'a' * 32},true", f"{'B' * 32},impostor", "xyz,true",
                            f"{'c' * 32},maybe", f"{'d' * 32},0"])
    assert rows == [(2, "a" * 32, True), (3, "b" * 32, False), (6, "d" * 32, False)]
    assert bad == ["line 4: audit_id 'xyz' is not 32 hex digits", "line 5: genuine 'maybe' is not true/false"]
    assert parse_rows(["id,label", "x,y"])[1][0].startswith("header must name audit_id and genuine")


def test_the_command_is_registered() -> None:
    args = build_parser().parse_args(["audit", "import-outcomes", "labels.csv", "--router-url", "http://x"])
    assert args.func.__name__ == "cmd_import" and str(args.csv) == "labels.csv"


async def test_import_stores_is_idempotent_and_reports_conflicts_and_unknown_ids(router) -> None:  # noqa: F811
    ids = []
    for i in range(3):
        image = b64(f"face-{i}".encode())
        assert (await router.client.post("/v1/enroll", json={"subject_id": f"s{i}", "face": image},
                                         headers=AUTH)).status_code == 200
        r = await router.client.post("/v1/verify", json={"subject_id": f"s{i}", "face": image}, headers=AUTH)
        ids.append(r.json()["audit_id"])
    rows = [(2, ids[0], True), (3, ids[1], False), (4, ids[2], True)]
    counts, problems = await import_outcomes(router.client, "http://router", CLIENT_KEY, rows)
    assert counts == {"stored": 3} and problems == []
    again, _ = await import_outcomes(router.client, "http://router", CLIENT_KEY, rows)
    assert again == {"unchanged": 3}
    counts, problems = await import_outcomes(router.client, "http://router", CLIENT_KEY,
                                             [(2, ids[0], False), (3, "f" * 32, True)])
    assert counts == {"conflict": 1, "not_found": 1}
    assert sorted(problems) == [f"line 2: {ids[0]}: HTTP 409 outcome_conflict",
                                f"line 3: {'f' * 32}: HTTP 404 not_found"]
    body = (await router.client.get("/v1/experiments/face-v2", headers=AUTH)).json()
    assert sum(e["genuine"] + e["impostor"] for e in body["errors"]) == 3


DAY = 86400.0


def test_parse_age():
    assert [parse_age(t) for t in ("90d", "12h", "30m", "45s", "1.5d")] == [90 * DAY, 43200, 1800, 45, 1.5 * DAY]
    for bad in ("90", "0d", "-1d", "d", "3w"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_age(bad)


async def _fill(url: str, now: float) -> None:
    db = await asyncio.to_thread(Database, url)
    try:
        store, subjects = AuditStore(db), SubjectStore(db)
        for i in range(7):  # 5 old (100 days), 2 recent (10 days)
            await store.record(record(i, created_at=now - (100 if i < 5 else 10) * DAY), "t1")
        await subjects.enroll("t1", "s1", [NewTemplate("face", "1", "a" * 32)], replace=False,
                              actor=Actor("k", "0" * 32))
        await db.write(lambda c: c.execute(subject_events.update().values(created_at=now - 100 * DAY)))
    finally:
        await asyncio.to_thread(db.close)


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


async def test_prune_removes_old_records_their_modalities_and_events_in_batches(audit_url):  # noqa: F811
    now = time.time()
    await _fill(audit_url, now)
    engine = make_engine(audit_url)
    try:
        counts = await asyncio.to_thread(prune, engine, 90 * DAY, 2, now)
        assert counts == {"audit_records": 5, "subject_events": 1}
        assert (_count(engine, audit_records), _count(engine, audit_modalities)) == (2, 2)
        assert (_count(engine, subject_events), _count(engine, templates)) == (0, 1)
        with engine.connect() as conn:
            left = sorted(conn.execute(select(audit_records.c.id)).scalars())
        assert left == [f"{5:032x}", f"{6:032x}"]
    finally:
        engine.dispose()


async def test_cli_prunes_the_given_database(audit_url, capsys):  # noqa: F811
    await _fill(audit_url, time.time())
    rc = await asyncio.to_thread(main, ["audit", "prune", "--older-than", "30d", "--audit-url", audit_url])
    assert rc == 0
    assert "pruned 5 audit records and 1 subject events older than 30 days" in capsys.readouterr().out
