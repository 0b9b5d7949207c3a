"""Fixtures of the router tests; the fakes themselves live in tests/router/support/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.router.support.fakes import RouterHarness, running_router
from tests.router.support.pg_server import PostgresServer, find_bin_dir, running_postgres


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[RouterHarness]:
    async with running_router(tmp_path) as harness:
        yield harness


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (each test takes a fresh database of it)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres, pg_ctl) not found on PATH or under "
                    "/usr/lib/postgresql/*/bin: install the Debian package 'postgresql'")
    with running_postgres(bin_dir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty audit database, once per backend the audit store supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a' / 'audit.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database() as url:
        yield url
