"""A/A and A/B simulation of canary experiments: false-positive rates and power of the report's tests.

    python bench/bench_abtest.py [--quick] [--experiments N] [--subjects M]

Zipf subjects with per-subject error propensities, the canary's weight moved 5 -> 50 % over ten
intervals, the report read at every interval (router/experiments/simulation.py). The A/A column
is the share of experiments in which each test fired with no difference at all; the A/B column
the same with the canary's error rate 2 points higher (power). Seeded: the table is the same on
every machine; only the time column varies.
"""

from __future__ import annotations

import argparse
import sys
import time

from router.experiments.simulation import SimConfig, simulate

REPORTS_MEDIANS = True  # deterministic (seeded) rates; repeating would only repeat them


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="500 experiments instead of 5,000")
    p.add_argument("--experiments", type=int, default=None)
    p.add_argument("--subjects", type=int, default=2000)
    args = p.parse_args(argv)
    n = args.experiments or (500 if args.quick else 5000)
    started = time.perf_counter()
    aa = simulate(SimConfig(experiments=n, subjects=args.subjects))
    ab = simulate(SimConfig(experiments=n, subjects=args.subjects, effect=0.02, seed=17))
    took = time.perf_counter() - started
    cfg = aa.config
    print(f"{n:,} A/A and {n:,} A/B experiments, {cfg.subjects:,} Zipf subjects (s = {cfg.zipf_s:g}), "
          f"{cfg.requests_per_interval:,.0f} requests per interval, canary weights "
          f"{' -> '.join(f'{100 * w:g}' for w in cfg.weights)} %, base error rate {100 * cfg.base_rate:g} %, "
          f"A/B difference +2 points; {took:.1f} s\n")
    print("| test (read as a canary reads it) | A/A: fired | A/B +2 points: fired (power) |")
    print("| --- | --- | --- |")
    for (name, a), (_, b) in zip(aa.rows(), ab.rows(), strict=True):
        print(f"| {name} | {100 * a:.2f} % | {100 * b:.2f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
