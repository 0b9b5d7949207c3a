"""SubjectStore on SQLite and PostgreSQL: tenants, enrolment without silent overwrite, migration
provenance, erasure, and the brute-force throttle (the HTTP side is in test_subjects_api.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from router.audit_store import AuditStore
from router.db import Database, subject_throttle, templates
from router.errors import SubjectExists, SubjectNotFound
from router.subjects import Actor, NewTemplate, SubjectStore, Throttle
from tests.router.test_audit_store import record

ME = Actor("client", "0" * 32)


@pytest.fixture
async def db(audit_url):
    database = await asyncio.to_thread(Database, audit_url)
    yield database
    await asyncio.to_thread(database.close)


def face(version: str, code: str) -> NewTemplate:
    return NewTemplate("face", version, code)


async def test_same_subject_id_in_two_tenants_is_two_subjects(db):
    s = SubjectStore(db)
    await s.enroll("t1", "alice", [face("1", "a" * 32)], replace=False, actor=ME)
    await s.enroll("t2", "alice", [face("1", "b" * 32)], replace=False, actor=ME)
    assert (await s.load("t1", "alice")).templates == {"face": {"1": "a" * 32}}
    assert (await s.load("t2", "alice")).templates == {"face": {"1": "b" * 32}}
    assert (await s.load("t3", "alice")).templates == {}


async def test_enrolment_over_a_subject_needs_replace_which_drops_every_version(db):
    s = SubjectStore(db)
    await s.enroll("t1", "bob", [face("1", "a" * 32), NewTemplate("fingerprint", "1", "f" * 32)], replace=False,
                   actor=ME)
    assert await s.migrate("t1", "bob", "face", "2", "c" * 32, vouched_by=("1", "a" * 32), audit_id="1" * 32)
    with pytest.raises(SubjectExists):
        await s.enroll("t1", "bob", [face("1", "d" * 32)], replace=False, actor=ME)
    assert (await s.load("t1", "bob")).templates["face"] == {"1": "a" * 32, "2": "c" * 32}
    await s.enroll("t1", "bob", [face("1", "d" * 32)], replace=True, actor=ME)
    # The migrated v2 template of the old face is gone with it; the fingerprint stays.
    assert (await s.load("t1", "bob")).templates == {"face": {"1": "d" * 32}, "fingerprint": {"1": "f" * 32}}
    kinds = [k for k, _ in await s.events("t1", "bob")]
    assert kinds == ["enroll", "replace"]
    detail = (await s.events("t1", "bob"))[1][1]
    assert detail == {"modalities": ["face"], "versions": ["face:1"]}


async def test_migration_stores_provenance_never_overwrites_and_needs_the_vouching_template(db):
    s = SubjectStore(db)
    await s.enroll("t1", "carol", [face("1", "a" * 32)], replace=False, actor=ME)
    assert not await s.migrate("t1", "carol", "face", "2", "c" * 32, vouched_by=("1", "b" * 32), audit_id="1" * 32)
    assert await s.migrate("t1", "carol", "face", "2", "c" * 32, vouched_by=("1", "a" * 32), audit_id="2" * 32)
    assert not await s.migrate("t1", "carol", "face", "2", "e" * 32, vouched_by=("1", "a" * 32), audit_id="3" * 32)
    rows = await db.read(lambda c: c.execute(select(templates.c.model_version, templates.c.code, templates.c.source,
                                                    templates.c.audit_id).order_by(templates.c.model_version)).all())
    assert [tuple(r) for r in rows] == [("1", "a" * 32, "enroll", None), ("2", "c" * 32, "migration", "2" * 32)]
    # Another tenant's template of the same id vouches for nothing here.
    assert not await s.migrate("t2", "carol", "face", "2", "c" * 32, vouched_by=("1", "a" * 32), audit_id="4" * 32)


async def test_erase_removes_every_version_and_the_throttle_and_leaves_an_event(db):
    s = SubjectStore(db)
    await s.enroll("t1", "dan", [face("1", "a" * 32)], replace=False, actor=ME)
    await s.migrate("t1", "dan", "face", "2", "c" * 32, vouched_by=("1", "a" * 32), audit_id="1" * 32)
    await AuditStore(db).record(record(1, decision="reject"), "t1", also=s.verdict_op("t1", "dan", "reject", 1.0))
    await s.enroll("t2", "dan", [face("1", "b" * 32)], replace=False, actor=ME)
    assert await s.erase("t1", "dan", ME) == 2
    assert (await s.load("t1", "dan")).templates == {}
    assert (await s.load("t2", "dan")).templates == {"face": {"1": "b" * 32}}
    codes = await db.read(lambda c: list(c.execute(select(templates.c.code)).scalars()))
    assert codes == ["b" * 32]
    assert await db.read(lambda c: c.execute(select(subject_throttle)).all()) == []
    assert (await s.events("t1", "dan"))[-1] == ("erase", {"templates": 2})
    with pytest.raises(SubjectNotFound):
        await s.erase("t1", "dan", ME)
    # The audit record stays (decisions and distances, no codes).
    assert (await AuditStore(db).get(f"{1:032x}", "t1")).decision == "reject"


async def _decide(s: SubjectStore, audit: AuditStore, i: int, decision: str, now: float) -> None:
    await audit.record(record(i, decision=decision), "t1", also=s.verdict_op("t1", "eve", decision, now))


async def test_throttle_locks_at_the_nth_reject_in_a_row_and_an_accept_resets(db):
    s, audit = SubjectStore(db, Throttle(max_rejects=3, window_s=60, lockout_s=30)), AuditStore(db)
    await s.enroll("t1", "eve", [face("1", "a" * 32)], replace=False, actor=ME)
    now = time.time()
    await _decide(s, audit, 1, "reject", now)
    await _decide(s, audit, 2, "reject", now + 1)
    await _decide(s, audit, 3, "accept", now + 2)  # resets the count
    await _decide(s, audit, 4, "reject", now + 3)
    await _decide(s, audit, 5, "reject", now + 4)
    assert (await s.load("t1", "eve")).locked_until is None
    await _decide(s, audit, 6, "reject", now + 5)
    state = await s.load("t1", "eve")
    assert state.locked_until == pytest.approx(now + 35)
    assert state.retry_after_s(now + 5) == 30 and state.retry_after_s(now + 36) is None
    # Another tenant's subject of the same id is not locked.
    assert (await s.load("t2", "eve")).locked_until is None
    err = await s.refuse_locked("t1", "eve", state, now + 10, ME)
    assert (err.status, err.code, err.retry_after_s) == (429, "subject_locked", 25)
    assert [k for k, _ in await s.events("t1", "eve")][-1] == "locked"


async def test_rejects_spread_wider_than_the_window_do_not_lock(db):
    s, audit = SubjectStore(db, Throttle(max_rejects=3, window_s=60, lockout_s=30)), AuditStore(db)
    for i, at in enumerate((0.0, 30.0, 70.0, 100.0)):  # the window restarts at 70
        await _decide(s, audit, i, "reject", 1000.0 + at)
    assert (await s.load("t1", "eve")).locked_until is None
    await _decide(s, audit, 9, "reject", 1000.0 + 120)
    assert (await s.load("t1", "eve")).locked_until == 1000.0 + 150


async def test_concurrent_rejects_are_all_counted(db):
    """The count is one upsert in the audit transaction: concurrent rejects (one group commit or
    several) never read-modify-write over each other."""
    s, audit = SubjectStore(db, Throttle(max_rejects=8, window_s=600, lockout_s=60)), AuditStore(db)
    now = time.time()
    await asyncio.gather(*(_decide(s, audit, i, "reject", now) for i in range(8)))
    rows = await db.read(lambda c: c.execute(select(subject_throttle.c.rejects, subject_throttle.c.locked_until)).all())
    assert [tuple(r) for r in rows] == [(8, pytest.approx(now + 60))]


async def test_two_enrolments_racing_for_one_new_subject_store_one(db):
    """Both pass the flow's early check; the write's own check in its transaction refuses the second."""
    s = SubjectStore(db)
    results = await asyncio.gather(s.enroll("t1", "fay", [face("1", "a" * 32)], replace=False, actor=ME),
                                   s.enroll("t1", "fay", [face("1", "b" * 32)], replace=False, actor=ME),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "SubjectExists"]
    winner = "a" * 32 if results[0] is None else "b" * 32
    assert (await s.load("t1", "fay")).templates == {"face": {"1": winner}}
    assert [k for k, _ in await s.events("t1", "fay")] == ["enroll"]
