"""Per-key rate limits that hold across router replicas: token buckets in the shared database.

Every replica keeps :class:`RateLimiter`'s interface (``check(key, rate, burst) -> wait_s``, no
I/O on the request path) and draws tokens from the key's bucket in the database in *leases*:

- a lease is ``rate * lease_s`` tokens (at least 1, at most ``burst``); a replica asks for the
  next one in the background when its lease falls under half, so steady traffic never waits;
- a request that finds the lease empty while a refill is on its way is admitted on credit, down
  to minus one lease; the debt is paid to the bucket with the next refill (the bucket may go
  negative, and then refuses until it has refilled);
- a lease idle for ``idle_s`` goes back to the bucket (tokens or debt), so a replica that stops
  seeing a key does not sit on its tokens.

Accuracy: the database bucket is exact; what the replicas hold besides it is at most about
1.5 leases each as unspent tokens and one lease each as debt. Over a window of T seconds with R
replicas a key is admitted ``burst + rate * T`` give or take ``R * 1.5 * rate * lease_s``:
with the default ``lease_s`` of 0.1 s, 3 replicas and T = 5 s that is within 5 %
(``bench/bench_replicas.py`` measures it). Database load: about ``1 / lease_s`` bucket
transactions a second per busy key while it is under its limit, at most ``R / lease_s`` while
every replica finds the bucket empty.

Store unreachable (``ratelimit_store_down``): ``open`` keeps serving with a per-replica bucket
(the limit then holds per replica, up to R times per key: availability first); ``closed`` admits
only what is already leased, then answers 429 (the limit first). Either way
``servestack_router_ratelimit_store_up`` drops to 0 and ``..._errors_total`` counts the failures.

The bucket table takes one short transaction per lease on an engine of its own that does not
wait for an fsync (SQLite ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off``): a
crash may forget the last lease or two, which the limit tolerates; the audit engine keeps its
durable commits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Engine, Float, MetaData, String, Table, create_engine, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url

from router.config import RouterSettings
from router.db import enable_wal
from router.metrics import RouterMetrics
from router.ratelimit import RateLimiter

log = logging.getLogger(__name__)

rate_buckets = Table(  # created by migration 4 in router/db.py
    "rate_buckets", MetaData(),
    Column("key", String(128), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


def make_bucket_engine(url: str) -> Engine:
    """An engine on the audit database whose commits do not wait for an fsync."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            enable_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at the next checkpoint, not each commit
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2,
                         connect_args={"options": "-c synchronous_commit=off"})


@dataclass(frozen=True)
class Grant:
    tokens: float  # granted now (0 when the bucket had none)
    wait_s: float  # with nothing granted: until the bucket holds a token again


class BucketStore:
    """The bucket table: one transaction per call, run in a thread (blocking driver)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock

    def _lock_row(self, conn: Connection, key: str, burst: float, now: float) -> tuple[float, float]:
        """Create the key's bucket (full) if new, then lock its row for this transaction."""
        values = {"key": key, "tokens": burst, "updated_at": now}
        query = select(rate_buckets.c.tokens, rate_buckets.c.updated_at).where(rate_buckets.c.key == key)
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the database write lock up front
            conn.execute(rate_buckets.insert().prefix_with("OR IGNORE").values(**values))
        else:
            conn.execute(pg_insert(rate_buckets).values(**values).on_conflict_do_nothing())
            query = query.with_for_update()
        tokens, updated = conn.execute(query).one()
        return tokens, updated

    def _refilled(self, conn: Connection, key: str, rate: float, burst: float) -> tuple[float, float]:
        now = self._clock()
        tokens, updated = self._lock_row(conn, key, burst, now)
        # max(): replicas' clocks differ a little; time never runs backwards for the bucket.
        at = max(updated, now)
        return min(burst, tokens + (at - updated) * rate), at

    def take(self, key: str, rate: float, burst: float, want: float, debt: float) -> Grant:
        """Pay ``debt`` (tokens spent on credit), then take up to ``want`` tokens."""
        with self.engine.begin() as conn:
            tokens, at = self._refilled(conn, key, rate, burst)
            tokens -= debt
            granted = min(want, tokens) if tokens >= 1 else 0.0
            tokens -= granted
            conn.execute(rate_buckets.update().where(rate_buckets.c.key == key).values(tokens=tokens, updated_at=at))
        wait_s = 0.0 if granted else (1 - tokens) / rate
        return Grant(granted, wait_s)

    def give_back(self, key: str, rate: float, burst: float, tokens: float) -> None:
        """Return unspent lease tokens (or, negative, pay a debt)."""
        with self.engine.begin() as conn:
            now_tokens, at = self._refilled(conn, key, rate, burst)
            conn.execute(rate_buckets.update().where(rate_buckets.c.key == key)
                         .values(tokens=min(burst, now_tokens + tokens), updated_at=at))


@dataclass
class _Lease:
    rate: float
    burst: float
    size: float
    tokens: float = 0.0  # negative: spent on credit while a refill was on its way
    refilling: bool = False
    retry_at: float = 0.0  # monotonic time before which the bucket is known to be empty
    last_used: float = 0.0


class SharedRateLimiter:
    """:class:`RateLimiter`'s ``check`` over a :class:`BucketStore` shared by every replica."""

    def __init__(self, store: BucketStore, *, lease_s: float = 0.1, fail_open: bool = True, idle_s: float = 2.0,
                 on_store_result: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._lease_s = lease_s
        self._fail_open = fail_open
        self._idle_s = idle_s
        self._on_result = on_store_result or (lambda _ok: None)
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._local = RateLimiter(clock)  # the fallback while the store is down and fail_open
        self._down_until = 0.0
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="ratelimit-store")
        self._tasks: set[asyncio.Task] = set()

    def check(self, key: str, rate_per_s: float, burst: float) -> float:
        """0 when the request may go; otherwise the wait in seconds (for Retry-After)."""
        now = self._clock()
        lease = self._leases.get(key)
        if lease is None or lease.rate != rate_per_s or lease.burst != burst:
            size = max(1.0, min(burst, rate_per_s * self._lease_s))
            lease = self._leases[key] = _Lease(rate_per_s, burst, size, tokens=lease.tokens if lease else 0.0)
        lease.last_used = now
        if lease.tokens >= 1:
            lease.tokens -= 1
            if lease.tokens < lease.size / 2:
                self._refill(key, lease, now)
            return 0.0
        if now < self._down_until:  # the store failed a moment ago
            return self._local.check(key, rate_per_s, burst) if self._fail_open else 1.0
        if now < lease.retry_at:
            return lease.retry_at - now
        self._refill(key, lease, now)
        if lease.refilling and lease.tokens - 1 >= -lease.size:
            lease.tokens -= 1  # on credit: the refill on its way pays for it
            return 0.0
        return lease.size / rate_per_s

    def _refill(self, key: str, lease: _Lease, now: float) -> None:
        if lease.refilling or now < lease.retry_at or now < self._down_until:
            return
        lease.refilling = True
        task = asyncio.get_running_loop().create_task(self._take(key, lease), name=f"ratelimit-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take(self, key: str, lease: _Lease) -> None:
        debt = max(0.0, -lease.tokens)
        loop = asyncio.get_running_loop()
        try:
            grant = await loop.run_in_executor(self._pool, self._store.take, key, lease.rate, lease.burst,
                                               lease.size, debt)
        except Exception as exc:  # store unreachable: the setting decides; the metric shows it
            self._store_failed(exc)
            return
        finally:
            lease.refilling = False
        self._on_result(True)
        lease.tokens += debt + grant.tokens
        if grant.tokens == 0:
            # Ask again when about a lease has refilled, not at the first token: a saturated key
            # then costs each replica at most 1 / lease_s transactions a second.
            lease.retry_at = self._clock() + max(grant.wait_s, lease.size / lease.rate)

    def _store_failed(self, exc: Exception) -> None:
        self._on_result(False)
        if self._clock() >= self._down_until:
            log.warning("rate-limit store unreachable (failing %s): %s", "open" if self._fail_open else "closed", exc)
        self._down_until = self._clock() + 1.0

    async def sweep(self) -> None:
        """Return the leases of keys idle for ``idle_s`` to the store (call periodically)."""
        now = self._clock()
        loop = asyncio.get_running_loop()
        for key, lease in list(self._leases.items()):
            if lease.refilling or now - lease.last_used < self._idle_s:
                continue
            del self._leases[key]
            if lease.tokens == 0:
                continue
            try:
                await loop.run_in_executor(self._pool, self._store.give_back, key, lease.rate, lease.burst,
                                           lease.tokens)
            except Exception as exc:
                self._store_failed(exc)
                return

    async def run(self, period_s: float = 1.0) -> None:
        """Sweep forever (cancel to stop)."""
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.sweep()
            except Exception:  # a sweeper that dies would leave tokens parked: log and go on
                log.exception("rate-limit lease sweep failed")

    async def close(self) -> None:
        """Give every lease back, then stop the store's threads."""
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        for lease in self._leases.values():
            lease.last_used = -1e18
        try:
            await self.sweep()
        finally:
            self._pool.shutdown(wait=True)
            self._store.engine.dispose()


def shared_limiter(settings: RouterSettings, metrics: RouterMetrics) -> SharedRateLimiter:
    """The database-backed limiter the settings describe, reporting to the router's metrics."""

    def on_result(ok: bool) -> None:
        metrics.ratelimit_store_up.set(1 if ok else 0)
        if not ok:
            metrics.ratelimit_store_errors.inc()

    return SharedRateLimiter(BucketStore(make_bucket_engine(settings.audit_url)), lease_s=settings.ratelimit_lease_s,
                             fail_open=settings.ratelimit_store_down == "open", on_store_result=on_result)
