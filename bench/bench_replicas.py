"""Rate-limit accuracy across router replicas: one key's admitted requests vs replica count R.

R limiters (:class:`router.ratelimit_store.SharedRateLimiter`, each with its own engine, thread
pool and leases, as each replica has) draw from one key's bucket in one database; requests arrive
round-robin over them at three times the key's rate for a fixed time. The table gives admitted /
(burst + rate * T): 1.00 is exact, and the issue's bound is 0.80-1.20. For contrast, the same
traffic over R independent in-process buckets (the router before shared buckets).
Also: bucket transactions per second (the database load the limit costs).

    python bench/bench_replicas.py [--replicas 1 3 6 12] [--seconds 4] [--audit-url URL]

The default database is a temporary SQLite file; pass a PostgreSQL URL to measure on a server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path


async def run_one(url: str, replicas: int, rate: float, burst: float, seconds: float, lease_s: float,
                  key: str) -> tuple[float, float, float]:
    """(shared admitted ratio, independent-buckets ratio, bucket transactions per second)."""
    from router.ratelimit import RateLimiter
    from router.ratelimit_store import BucketStore, SharedRateLimiter, make_bucket_engine

    calls = 0

    class CountingStore(BucketStore):
        def take(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return super().take(*args, **kwargs)

    shared = [SharedRateLimiter(CountingStore(make_bucket_engine(url)), lease_s=lease_s) for _ in range(replicas)]
    alone = [RateLimiter() for _ in range(replicas)]
    per_s = 3 * rate
    admitted = admitted_alone = i = 0
    start = time.monotonic()
    next_at = start
    while (now := time.monotonic()) < start + seconds:
        if shared[i % replicas].check(key, rate, burst) == 0:
            admitted += 1
        if alone[i % replicas].check(key, rate, burst) == 0:
            admitted_alone += 1
        i += 1
        next_at += 1 / per_s
        await asyncio.sleep(max(0.0, next_at - now))
    elapsed = time.monotonic() - start
    for limiter in shared:
        await limiter.close()
    expected = burst + rate * elapsed
    return admitted / expected, admitted_alone / expected, calls / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", nargs="+", type=int, default=[1, 3, 6, 12])
    p.add_argument("--rate", type=float, default=50.0, help="the key's rate_per_s")
    p.add_argument("--burst", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=4.0, help="traffic per row")
    p.add_argument("--lease-s", type=float, default=0.1)
    p.add_argument("--audit-url", default=None, help="default: a temporary SQLite file")
    p.add_argument("--quick", action="store_true", help="R in 1 3, 2 s each")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.replicas, args.seconds = [1, 3], 2.0

    from router.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        url = args.audit_url or f"sqlite:///{Path(tmp) / 'audit.db'}"
        Database(url).close()  # migrated: the bucket table exists
        rows = []
        for r in args.replicas:
            ratio, alone, tx = asyncio.run(run_one(url, r, args.rate, args.burst, args.seconds, args.lease_s,
                                                   key=f"bench-{r}-{time.time_ns()}"))
            print(f"R={r}: shared {ratio:.2f}, independent {alone:.2f}, {tx:.1f} tx/s", file=sys.stderr)
            rows.append((r, ratio, alone, tx))
    store = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"Key limit {args.rate:g}/s, burst {args.burst:g}, offered {3 * args.rate:g}/s round-robin for "
          f"{args.seconds:g} s; lease {args.lease_s:g} s; store {store}.\n")
    print("| replicas R | admitted / (burst + rate x T), shared buckets | same, independent buckets | "
          "bucket transactions/s |")
    print("| --- | --- | --- | --- |")
    for r, ratio, alone, tx in rows:
        print(f"| {r} | {ratio:.2f} | {alone:.2f} | {tx:.1f} |")
    command = " ".join(["python bench/bench_replicas.py", shlex.join(argv if argv is not None else sys.argv[1:])])
    print(f"\n`{command.rstrip()}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
