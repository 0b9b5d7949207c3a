"""A real, throw-away PostgreSQL server for the audit-store tests (helper, not a test module).

``initdb`` + ``postgres`` in a temp dir, on 127.0.0.1 and a free port, stopped and removed at the
end. PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user
(created by the Debian ``postgresql`` package) through ``runuser``. Binaries are looked up on PATH,
then under Debian's ``/usr/lib/postgresql/<version>/bin``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "servestack"


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``postgres`` and ``pg_ctl``; None when PostgreSQL is absent."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).parent] if on_path else []
    # Debian keeps the server binaries off PATH; the highest version wins.
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                      if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += [Path(p) for p in versions]
    for d in candidates:
        if all((d / name).is_file() for name in ("initdb", "postgres", "pg_ctl")):
            return d
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    host: str
    port: int
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database for one test; dropped afterwards. Yields its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root needs the 'postgres' user (Debian package postgresql)") from exc
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def running_postgres(bin_dir: Path, start_timeout_s: float = 60.0) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server in a temp dir; stop it and remove the dir on exit."""
    root = Path(tempfile.mkdtemp(prefix="servestack-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    log_path = root / "postgres.log"
    try:
        subprocess.run(
            _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                             "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True, timeout=120,
        )
        port = free_port()
        # fsync off: these tests check SQL behaviour, not the disk (durability is PostgreSQL's default
        # in production and is not changed by the router). The socket dir is ours, not /run/postgresql.
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root),
                "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=50"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(_as_server_user(argv), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            _wait_ready(proc, port, log_path, start_timeout_s)
            yield PostgresServer("127.0.0.1", port, data)
        finally:
            _stop(proc, bin_dir, data)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres", connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(proc: subprocess.Popen, bin_dir: Path, data: Path) -> None:
    """Fast shutdown through pg_ctl (it signals the postmaster by its pid file), then wait for it."""
    if proc.poll() is None:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"]),
                       capture_output=True, timeout=60)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # our own session (start_new_session): only the server we started
        proc.wait(timeout=10)
