"""What Locust's own statistics cannot say: which canary arm served each verification, and the
time to first token of streamed explanations.

Why not custom Locust request events: they would be counted in Locust's "Aggregated" row and
distort the run's request rate and percentiles. The recorder keeps them aside and every Locust
process writes its part to `<dir>/extra-<pid>.json` when it quits; `load_tests.summary` merges
the parts (several when Locust runs with `--processes`).

Latencies are kept as a histogram with Locust's own rounding (2 significant digits), so memory
stays bounded on a soak test and percentiles agree with Locust's to within that rounding.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXTRA_PREFIX = "extra-"


def round_ms(ms: float) -> int:
    """Locust's bucket for a response time: exact below 100 ms, then 2 significant digits."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


@dataclass
class Histogram:
    """Response times in ms, bucketed like Locust's (see round_ms)."""

    buckets: Counter[int] = field(default_factory=Counter)

    def add(self, ms: float) -> None:
        self.buckets[round_ms(ms)] += 1

    @property
    def count(self) -> int:
        return sum(self.buckets.values())

    def percentile(self, q: float) -> float | None:
        """The smallest bucket value with at least q of the samples at or below it; None if empty."""
        total = self.count
        if total == 0:
            return None
        # Locust's definition: the value at position int(total * q) in the sorted samples.
        target = total - int(total * q)
        seen = 0
        for value in sorted(self.buckets, reverse=True):
            seen += self.buckets[value]
            if seen >= target:
                return float(value)
        return float(min(self.buckets))

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)

    def to_json(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(self.buckets.items())}

    @classmethod
    def from_json(cls, data: Mapping[str, int]) -> Histogram:
        return cls(Counter({int(float(k)): int(v) for k, v in data.items()}))

    def quantiles(self) -> dict[str, float | int | None]:
        return {"count": self.count, "p50_ms": self.percentile(0.5), "p95_ms": self.percentile(0.95),
                "p99_ms": self.percentile(0.99)}


@dataclass
class RunRecorder:
    """Per-arm latencies (by endpoint, modality, arm) and explanation stream timings of one process.

    ``arms["verify"]["face"]["v2"]`` is the latency histogram of verifications whose face code
    came from arm v2.
    """

    arms: dict[str, dict[str, dict[str, Histogram]]] = field(default_factory=dict)
    ttft: Histogram = field(default_factory=Histogram)
    stream_total: Histogram = field(default_factory=Histogram)
    unattributed: int = 0

    def record_arms(self, endpoint: str, arms: Mapping[str, str], latency_ms: float) -> None:
        """One successful request: the arm that served each modality."""
        if not arms:
            self.unattributed += 1
        for modality, arm in arms.items():
            by_modality = self.arms.setdefault(endpoint, {}).setdefault(modality, {})
            by_modality.setdefault(arm, Histogram()).add(latency_ms)

    def record_stream(self, ttft_ms: float | None, total_ms: float) -> None:
        if ttft_ms is not None:
            self.ttft.add(ttft_ms)
        self.stream_total.add(total_ms)

    def merge(self, other: RunRecorder) -> None:
        for endpoint, by_modality in other.arms.items():
            for modality, by_arm in by_modality.items():
                for arm, hist in by_arm.items():
                    mine = self.arms.setdefault(endpoint, {}).setdefault(modality, {})
                    mine.setdefault(arm, Histogram()).merge(hist)
        self.ttft.merge(other.ttft)
        self.stream_total.merge(other.stream_total)
        self.unattributed += other.unattributed

    def to_json(self) -> dict[str, Any]:
        return {
            "arms": {e: {m: {a: h.to_json() for a, h in by_arm.items()} for m, by_arm in by_mod.items()}
                     for e, by_mod in self.arms.items()},
            "ttft": self.ttft.to_json(),
            "stream_total": self.stream_total.to_json(),
            "unattributed": self.unattributed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecorder:
        return cls(
            arms={e: {m: {a: Histogram.from_json(h) for a, h in by_arm.items()} for m, by_arm in by_mod.items()}
                  for e, by_mod in data["arms"].items()},
            ttft=Histogram.from_json(data.get("ttft", {})),
            stream_total=Histogram.from_json(data.get("stream_total", {})),
            unattributed=int(data.get("unattributed", 0)),
        )

    def write(self, directory: Path) -> Path:
        """Write this process's part as `extra-<pid>.json` (atomically: a reader never sees half)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{EXTRA_PREFIX}{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        os.replace(tmp, path)
        return path


def load_parts(paths: Iterable[Path]) -> RunRecorder:
    """Merge the parts written by every Locust process of a run."""
    merged = RunRecorder()
    for path in paths:
        merged.merge(RunRecorder.from_json(json.loads(path.read_text())))
    return merged
