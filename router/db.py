"""Database plumbing of the audit store: engine, schema migrations, and a group-commit writer thread.

Durability: SQLite runs in WAL mode with ``synchronous=FULL``, so a commit returns only after the
WAL is fsynced; PostgreSQL commits are durable by default. Every write goes through one writer
thread that commits whatever is queued in one transaction (group commit): one fsync serves many
concurrent requests, and no blocking DB call ever runs on the event loop. Reads use a small
thread pool of their own (WAL readers do not block the writer).

Outages: when the database cannot be reached or cannot write (PostgreSQL down or restarting, the
SQLite disk full), reads and writes raise :class:`AuditUnavailable` (503 ``audit_unavailable`` +
Retry-After) instead of a driver error, so a verification whose record was not committed is never
answered as if it had been, and never with a 500. Nothing is kept to retry later: the caller was
told, and acknowledged records are already durable. Each later call tries the database again
(PostgreSQL connections are pre-pinged), so the router recovers by itself when the database does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from router.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations", metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("applied_at", Float, nullable=False),
)
# The current schema (what the stores read and write). Each migration below writes its own DDL:
# these objects change with later versions, a migration's step must not.
audit_records = Table(
    "audit_records", metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("decision", String(8), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("fused_distance", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("record", Text, nullable=False),  # the full AuditRecord JSON (no images, no codes)
    Column("explanation", Text, nullable=True),  # cached Explanation JSON
    Column("explained_at", Float, nullable=True),
    Column("tenant", String(64), nullable=False),
)
audit_modalities = Table(
    "audit_modalities", metadata,
    Column("audit_id", String(32), primary_key=True),
    Column("modality", String(16), primary_key=True),
    Column("route", String(64), nullable=False),
    Column("arm", String(64), nullable=False),
    Column("backend", String(64), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("precision", String(16), nullable=False),
    Column("distance", Integer, nullable=False),
    Column("decision", String(8), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("policy_version", Integer, nullable=True),  # v3: the policy version that chose the arm
    Column("assignment", String(16), nullable=True),  # v3: randomised | pinned | fallback | shadow | migration
    Index("ix_audit_modalities_route_created", "route", "created_at"),
)
audit_outcomes = Table(  # v3: labelled ground truth of a verification, posted after the fact
    "audit_outcomes", metadata,
    Column("audit_id", String(32), primary_key=True),
    Column("genuine", Boolean, nullable=False),
    Column("labelled_at", Float, nullable=False),
)
policy_versions = Table(  # v3: the weights each policy version put in force, per route (for SRM)
    "policy_versions", metadata,
    Column("version", Integer, primary_key=True),
    Column("route", String(64), primary_key=True),
    Column("weights", Text, nullable=False),  # JSON {arm: weight}, in arm order
    Column("applied_at", Float, nullable=False),
)
templates = Table(
    "templates", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("subject_id", String(128), primary_key=True),
    Column("modality", String(16), primary_key=True),
    Column("model_version", String(32), primary_key=True),
    Column("code", String(32), nullable=False),  # 128-bit code as hex; never logged
    Column("source", String(16), nullable=False),  # enroll | migration
    Column("audit_id", String(32), nullable=True),  # migration: the verification that vouched for it
    Column("created_at", Float, nullable=False),
)
subject_events = Table(
    "subject_events", metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # enroll | replace | erase | locked
    Column("created_at", Float, nullable=False),
    Column("key_name", String(64), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("detail", Text, nullable=True),  # JSON: modalities, versions, counts (never codes)
)
subject_throttle = Table(
    "subject_throttle", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("subject_id", String(128), primary_key=True),
    Column("rejects", Integer, nullable=False),  # consecutive rejects since window_start
    Column("window_start", Float, nullable=False),
    Column("locked_until", Float, nullable=True),
)

DEFAULT_TENANT = "default"


def _v1_initial(conn: Connection) -> None:
    # The version-1 tables exactly as they were first shipped (frozen: later versions migrate them).
    v1 = MetaData()
    Table(
        "audit_records", v1,
        Column("id", String(32), primary_key=True),
        Column("created_at", Float, nullable=False),
        Column("trace_id", String(32), nullable=False),
        Column("subject_id", String(128), nullable=False),
        Column("decision", String(8), nullable=False),
        Column("threshold", Float, nullable=False),
        Column("fused_distance", Float, nullable=False),
        Column("latency_ms", Float, nullable=False),
        Column("record", Text, nullable=False),
        Column("explanation", Text, nullable=True),
        Column("explained_at", Float, nullable=True),
    )
    Table(
        "audit_modalities", v1,
        Column("audit_id", String(32), primary_key=True),
        Column("modality", String(16), primary_key=True),
        Column("route", String(64), nullable=False),
        Column("arm", String(64), nullable=False),
        Column("backend", String(64), nullable=False),
        Column("model_version", String(32), nullable=False),
        Column("precision", String(16), nullable=False),
        Column("distance", Integer, nullable=False),
        Column("decision", String(8), nullable=False),
        Column("latency_ms", Float, nullable=False),
        Column("created_at", Float, nullable=False),
        Index("ix_audit_modalities_route_created", "route", "created_at"),
    )
    Table(
        "templates", v1,
        Column("subject_id", String(128), primary_key=True),
        Column("modality", String(16), primary_key=True),
        Column("model_version", String(32), primary_key=True),
        Column("code", String(32), nullable=False),
        Column("source", String(16), nullable=False),
        Column("created_at", Float, nullable=False),
    )
    v1.create_all(conn, checkfirst=True)


def _v2_tenants_and_subjects(conn: Connection) -> None:
    """Tenants on every row (existing rows: ``default``), template provenance, subject events, throttle.

    The templates' primary key gains the tenant: a new table is filled from the old one, which is
    then dropped (SQLite cannot change a primary key in place).
    """
    for table in ("audit_records", "audit_modalities"):
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN tenant VARCHAR(64) NOT NULL DEFAULT '{DEFAULT_TENANT}'")
    conn.exec_driver_sql("CREATE INDEX ix_audit_records_created ON audit_records (created_at)")
    conn.exec_driver_sql(
        "CREATE INDEX ix_audit_modalities_tenant_route_created ON audit_modalities (tenant, route, created_at)")
    v2 = MetaData()
    Table(
        "templates_v2", v2,
        Column("tenant", String(64), primary_key=True),
        Column("subject_id", String(128), primary_key=True),
        Column("modality", String(16), primary_key=True),
        Column("model_version", String(32), primary_key=True),
        Column("code", String(32), nullable=False),
        Column("source", String(16), nullable=False),
        Column("audit_id", String(32), nullable=True),
        Column("created_at", Float, nullable=False),
    )
    Table(
        "subject_events", v2,
        Column("id", String(32), primary_key=True),
        Column("tenant", String(64), nullable=False),
        Column("subject_id", String(128), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("key_name", String(64), nullable=False),
        Column("trace_id", String(32), nullable=False),
        Column("detail", Text, nullable=True),
        Index("ix_subject_events_subject", "tenant", "subject_id", "created_at"),
        Index("ix_subject_events_created", "created_at"),
    )
    Table(
        "subject_throttle", v2,
        Column("tenant", String(64), primary_key=True),
        Column("subject_id", String(128), primary_key=True),
        Column("rejects", Integer, nullable=False),
        Column("window_start", Float, nullable=False),
        Column("locked_until", Float, nullable=True),
    )
    v2.create_all(conn)
    conn.exec_driver_sql(
        "INSERT INTO templates_v2 (tenant, subject_id, modality, model_version, code, source, audit_id, created_at) "
        f"SELECT '{DEFAULT_TENANT}', subject_id, modality, model_version, code, source, NULL, created_at FROM templates"
    )
    conn.exec_driver_sql("DROP TABLE templates")
    conn.exec_driver_sql("ALTER TABLE templates_v2 RENAME TO templates")


def _v3_experiments(conn: Connection) -> None:
    """Assignment kind and policy version per modality row; labelled outcomes; weights per policy version.

    Explicit DDL, guarded: a database created while version 1 built its tables from the current
    table objects may already have the columns.
    """
    have = {c["name"] for c in inspect(conn).get_columns("audit_modalities")}
    if "policy_version" not in have:
        conn.exec_driver_sql("ALTER TABLE audit_modalities ADD COLUMN policy_version INTEGER")
    if "assignment" not in have:
        conn.exec_driver_sql("ALTER TABLE audit_modalities ADD COLUMN assignment VARCHAR(16)")
    for table in (audit_outcomes, policy_versions):
        table.create(conn, checkfirst=True)


def _v4_rate_buckets(conn: Connection) -> None:
    # Written out, not derived from a Table: a migration must not change when the model does.
    # One token bucket per API key, shared by every router replica (router/ratelimit_store.py).
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS rate_buckets ("
        " key VARCHAR(128) NOT NULL PRIMARY KEY,"
        " tokens DOUBLE PRECISION NOT NULL,"
        " updated_at DOUBLE PRECISION NOT NULL)"
    )


# Append-only: (version, name, step). A step receives a connection inside the migration transaction.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial: audit_records, audit_modalities, templates", _v1_initial),
    (2, "tenants, template provenance, subject events and throttle", _v2_tenants_and_subjects),
    (3, "experiments: assignment kind and policy version per row, audit_outcomes, policy_versions", _v3_experiments),
    (4, "rate_buckets: per-key token buckets shared by router replicas", _v4_rate_buckets),
]


def enable_wal(cur: Any, timeout_s: float = 30.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock it needs.

    Switching a new file to WAL takes an exclusive lock without calling the busy handler, so two
    routers opening one new database at once failed now and then with "database is locked".
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///path`` (WAL, synchronous=FULL) or ``postgresql+psycopg://...``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            enable_wal(cur)
            cur.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: acked = durable
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # A bounded connect: while the server is unreachable each request learns so within seconds.
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


class AuditUnavailable(Unavailable):
    """The audit database cannot be read or written now (503 ``audit_unavailable``, Retry-After)."""

    code = "audit_unavailable"


def is_outage(exc: BaseException) -> bool:
    """A failure of the database itself (unreachable, restarting, disk full), not of one statement."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


# Key of the PostgreSQL advisory lock that serialises migrations (any fixed bigint; ours spells "svstkmig").
MIGRATION_LOCK_KEY = 0x737673746B6D6967


def _lock_for_migration(conn: Connection) -> None:
    """Serialise migrations across processes: several routers may start at once on one database.

    Without this, two of them both find a version unapplied and both run it: the loser fails with
    a duplicate table or key. PostgreSQL: a transaction-scoped advisory lock (released at commit;
    DDL is transactional, so the waiter then sees the winner's tables and versions). SQLite:
    ``BEGIN IMMEDIATE`` takes the database write lock up front (the driver would otherwise run
    DDL outside any transaction and begin only at the first INSERT).
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
    elif dialect == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> int:
    """Apply pending migrations in order, under a cross-process lock; return the schema version now in force."""
    with engine.begin() as conn:
        _lock_for_migration(conn)
        schema_migrations.create(conn, checkfirst=True)
        applied = set(conn.execute(select(schema_migrations.c.version)).scalars())
        for version, name, step in MIGRATIONS:
            if version in applied:
                continue
            log.info("applying audit schema migration %d: %s", version, name)
            step(conn)
            conn.execute(schema_migrations.insert().values(version=version, name=name, applied_at=time.time()))
    return MIGRATIONS[-1][0]


_STOP = object()


class Database:
    """Engine + one group-commit writer thread + a reader pool. ``close()`` drains and stops them."""

    def __init__(self, url: str, batch_max: int = 256, on_commit: Callable[[float], None] | None = None) -> None:
        self.engine = make_engine(url)
        self.schema_version = migrate(self.engine)
        self._batch_max = batch_max
        self._on_commit = on_commit or (lambda _s: None)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._writer.start()
        self._readers = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="audit-read")
        self._closed = False
        self.outage_since: float | None = None  # monotonic time of the first failure of an ongoing outage

    async def write(self, op: Callable[[Connection], T]) -> T:
        """Run ``op(conn)`` in the next group commit; return once that commit is durable.

        Raises :class:`AuditUnavailable` when the database is out: then nothing was committed
        (or, when the connection broke during COMMIT itself, the caller cannot know and was not told).
        """
        if self._closed:
            raise RuntimeError("database is closed")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((op, fut))
        try:
            return await asyncio.wrap_future(fut)
        except DBAPIError as exc:
            if is_outage(exc):
                raise AuditUnavailable(f"audit store unavailable, nothing was recorded: {_brief(exc)}") from exc
            raise

    async def read(self, op: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, self._run_read, op)
        except DBAPIError as exc:
            if is_outage(exc):
                self._outage(exc)
                raise AuditUnavailable(f"audit store unavailable: {_brief(exc)}") from exc
            raise

    def _outage(self, exc: BaseException | None) -> None:
        """Log the start and the end of an outage once each, not once per failed request."""
        if exc is not None and self.outage_since is None:
            self.outage_since = time.monotonic()
            log.error("audit store unavailable: %s", _brief(exc))
        elif exc is None and self.outage_since is not None:
            log.warning("audit store available again after %.1f s", time.monotonic() - self.outage_since)
            self.outage_since = None

    def _run_read(self, op: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return op(conn)

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(1)).scalar() == 1

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Callable[[Connection], Any], concurrent.futures.Future]]) -> None:
        start = time.perf_counter()
        try:
            with self.engine.begin() as conn:
                results = [op(conn) for op, _ in batch]
        except Exception as exc:
            if is_outage(exc):
                # The database is out, not one op wrong: every op of the batch fails alike, at once.
                self._outage(exc)
                for _, fut in batch:
                    fut.set_exception(exc)
                return
            # One bad op must not fail its neighbours: redo each alone so only the culprit fails.
            if len(batch) > 1:
                for one in batch:
                    self._commit([one])
                return
            log.error("audit write failed: %s", exc)
            batch[0][1].set_exception(exc)
            return
        self._outage(None)
        self._on_commit(time.perf_counter() - start)
        for (_, fut), result in zip(batch, results, strict=True):
            fut.set_result(result)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join(timeout=30)
        self._readers.shutdown(wait=True)
        self.engine.dispose()


def _brief(exc: BaseException) -> str:
    """The driver's message, first line only (SQLAlchemy appends the statement and its parameters)."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0][:300]
