"""Fault matrix, audit database: PostgreSQL down and back, PostgreSQL kill -9 under load, SQLite disk full.

What must hold in each: a request whose audit record (or template) was not committed is answered
503 ``audit_unavailable`` with Retry-After, never 500 and never 200; every record a client got an
id for is there afterwards; the router recovers without a restart when the database does.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.faults.harness import Results, drive, enroll, face, hashers, policy, start_router, wait_for
from tests.router.support.fakes import AUTH
from tests.router.support.pg_server import PostgresProcess, find_bin_dir, postgres_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SUBJECTS = [f"d{i}" for i in range(10)]


@pytest.fixture
def pg_bin() -> Path:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found: install the Debian package 'postgresql'")
    return bin_dir


def pg_url(server: PostgresProcess) -> str:
    return f"postgresql+psycopg://servestack@127.0.0.1:{server.port}/postgres"


def audit_ids(server: PostgresProcess) -> set[str]:
    with psycopg.connect(host="127.0.0.1", port=server.port, user="servestack", dbname="postgres") as conn:
        return {row[0] for row in conn.execute("SELECT id FROM audit_records")}


def assert_refusals_are_503(results: Results) -> None:
    for o in results.failures():
        assert o.status == 503, (o.status, o.body)
        assert o.body["error"]["code"] == "audit_unavailable" and int(o.headers["retry-after"]) >= 1


async def test_postgres_down_refuses_then_recovers_without_restart(tmp_path, pg_bin):
    with postgres_process(pg_bin) as pg, hashers(tmp_path, replicas=1) as pods, \
            start_router(tmp_path, policy(pods.urls, pods.fallback_url), audit_url=pg_url(pg)) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
            await enroll(client, SUBJECTS)
            before = await drive(client, seconds=1, workers=4, subjects=SUBJECTS)
            assert before.failures() == [] and before.ok()
            pg.stop()
            down = await drive(client, seconds=2, workers=4, subjects=SUBJECTS)
            assert down.ok() == [] and len(down.outcomes) > 4, down.statuses()
            assert_refusals_are_503(down)
            assert max(o.latency_s for o in down.outcomes) < 6  # refused, not hung
            r = await client.post("/v1/enroll", headers=AUTH, json=face("new-subject"))
            assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
            pg.start()
            wait_for(lambda: httpx.post(f"{router.url}/v1/verify", headers=AUTH, json=face(SUBJECTS[0]),
                                        timeout=10).status_code == 200, 20, "the router to recover")
            after = await drive(client, seconds=1, workers=4, subjects=SUBJECTS)
            assert after.failures() == [] and after.ok()
        stored = audit_ids(pg)
        acked = {o.body["audit_id"] for o in before.ok() + after.ok()}
        assert acked <= stored
        # Nothing answered 503 was stored: only the acknowledged ones and the recovery probes are there.
        assert len(stored - acked) <= 5


async def test_postgres_kill_9_under_load_loses_no_acknowledged_record(tmp_path, pg_bin):
    with postgres_process(pg_bin, fsync=True) as pg, hashers(tmp_path, replicas=1) as pods, \
            start_router(tmp_path, policy(pods.urls, pods.fallback_url), audit_url=pg_url(pg)) as router:
        async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
            await enroll(client, SUBJECTS)
            results = await drive(client, seconds=3, workers=8, subjects=SUBJECTS, during=1.5, action=pg.kill)
            pg.start()  # crash recovery replays the WAL
            wait_for(lambda: httpx.post(f"{router.url}/v1/verify", headers=AUTH, json=face(SUBJECTS[0]),
                                        timeout=10).status_code == 200, 20, "the router to recover")
        assert len(results.ok()) > 20 and len(results.failures()) > 0, results.statuses()
        assert_refusals_are_503(results)
        acked = {o.body["audit_id"] for o in results.ok()}
        missing = acked - audit_ids(pg)
        assert missing == set()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the disk-full row needs a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = path / "filler"
    with filler.open("wb", buffering=0) as fh:
        chunk = b"\0" * 4096
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


async def test_sqlite_disk_full_answers_503_and_loses_nothing(tmp_path):
    with small_tmpfs(tmp_path / "disk", "8m") as disk, hashers(tmp_path, replicas=1) as pods:
        audit_url = f"sqlite:///{disk / 'audit.db'}"
        with start_router(tmp_path, policy(pods.urls, pods.fallback_url), audit_url=audit_url) as router:
            async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
                await enroll(client, SUBJECTS)
                before = await drive(client, seconds=1, workers=4, subjects=SUBJECTS)
                filler = fill(disk)
                full = await drive(client, seconds=3, workers=4, subjects=SUBJECTS)
                filler.unlink()
                wait_for(lambda: httpx.post(f"{router.url}/v1/verify", headers=AUTH, json=face(SUBJECTS[0]),
                                            timeout=10).status_code == 200, 20, "the router to recover")
        assert before.failures() == [] and before.ok()
        assert full.failures(), f"the full disk never failed a write: {full.statuses()}"
        assert_refusals_are_503(full)
        acked = [o.body["audit_id"] for o in before.ok() + full.ok()]
        with start_router(tmp_path, {}, audit_url=audit_url) as again:  # a fresh process reads the file
            missing = [a for a in acked
                       if httpx.get(f"{again.url}/v1/audit/{a}", headers=AUTH, timeout=10).status_code != 200]
        assert missing == []
