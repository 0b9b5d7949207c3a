"""Shared token buckets: several limiters (replicas) over one database hold one key's limit.

Runs on SQLite and on the suite's real PostgreSQL (the ``audit_url`` fixture). Traffic is real
time, a couple of seconds; the bound asserted is the module's documented accuracy, not a speed.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from router.db import Database
from router.ratelimit_store import BucketStore, SharedRateLimiter, make_bucket_engine, rate_buckets


@pytest.fixture
async def bucket_url(audit_url):
    db = await asyncio.to_thread(Database, audit_url)  # migrations create rate_buckets
    await asyncio.to_thread(db.close)
    return audit_url


async def drive(limiters: list[SharedRateLimiter], key: str, rate: float, burst: float, seconds: float,
                per_s: float) -> int:
    """Offer ``per_s`` requests a second round-robin over the limiters; count the admitted."""
    admitted, i = 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if limiters[i % len(limiters)].check(key, rate, burst) == 0:
            admitted += 1
        i += 1
        await asyncio.sleep(1 / per_s)
    return admitted


async def test_three_replicas_hold_one_limit(bucket_url) -> None:
    limiters = [SharedRateLimiter(BucketStore(make_bucket_engine(bucket_url))) for _ in range(3)]
    rate, burst, seconds = 40.0, 40.0, 2.0
    start = time.monotonic()
    admitted = await drive(limiters, "team-a", rate, burst, seconds, per_s=250)
    elapsed = time.monotonic() - start
    for lim in limiters:
        await lim.close()
    expected = burst + rate * elapsed
    assert 0.8 * expected <= admitted <= 1.2 * expected, (admitted, expected)
    # Alone, each replica would have admitted burst + rate * T: about three times as many.
    assert admitted < 0.5 * 3 * expected


async def test_leases_go_back_to_the_bucket(bucket_url) -> None:
    engine = make_bucket_engine(bucket_url)
    limiter = SharedRateLimiter(BucketStore(engine), lease_s=0.5)
    assert limiter.check("k", 10, 20) == 0  # on credit, a lease of 5 on its way
    await asyncio.sleep(0.3)
    await limiter.close()  # 4 unspent tokens return to the bucket
    check = make_bucket_engine(bucket_url)
    with check.connect() as conn:
        tokens = conn.execute(select(rate_buckets.c.tokens).where(rate_buckets.c.key == "k")).scalar_one()
    check.dispose()
    assert 19 - 0.5 <= tokens <= 20  # 20 - 1 spent (+ a little refill while the test ran)


@pytest.mark.parametrize("fail_open", [True, False])
async def test_store_down_fails_open_or_closed_as_set(fail_open: bool) -> None:
    results: list[bool] = []
    dead = make_bucket_engine("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1")
    limiter = SharedRateLimiter(BucketStore(dead), fail_open=fail_open, on_store_result=results.append)
    first = limiter.check("k", 100, 100)
    assert first == 0  # on credit while the first lease is asked for
    for _ in range(100):
        await asyncio.sleep(0.02)
        if results:
            break
    assert results and results[0] is False  # the metric's input: the store is down
    admitted = sum(limiter.check("k", 100, 100) == 0 for _ in range(50))
    await limiter.close()
    assert admitted == (50 if fail_open else 0)


async def test_router_with_the_database_store_limits_and_reports_it(tmp_path) -> None:
    from tests.router.support.fakes import LIMITED_KEY, running_router

    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}  # 0.5/s, burst 2
    async with running_router(tmp_path, ratelimit_store="database") as router:
        statuses = []
        for _ in range(5):
            statuses.append((await router.client.get(f"/v1/audit/{'0' * 32}", headers=limited)).status_code)
            await asyncio.sleep(0.05)  # let the lease arrive between requests
        assert statuses[:2] == [404, 404] and statuses[2:] == [429, 429, 429]
        assert router.metric("servestack_router_ratelimit_store_up") == 1
        assert router.metric("servestack_router_rate_limited_total", key="limited") == 3
    engine = make_bucket_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    with engine.connect() as conn:
        tokens = conn.execute(select(rate_buckets.c.tokens).where(rate_buckets.c.key == "limited")).scalar_one()
    engine.dispose()
    assert tokens < 1  # the two admitted requests were taken from the shared bucket
