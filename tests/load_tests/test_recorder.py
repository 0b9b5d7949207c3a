"""Per-arm recorder (histograms agree with Locust's percentiles) and the SSE parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from load_tests.recorder import Histogram, RunRecorder, load_parts, round_ms
from load_tests.sse import SSEEvent, SSEParser

_LOCUST_PERCENTILES = """
import json, sys
from collections import Counter
from locust.stats import bucket_response_time, calculate_response_time_percentile
samples = json.loads(sys.stdin.read())
buckets = Counter(bucket_response_time(ms) for ms in samples)
print(json.dumps([calculate_response_time_percentile(buckets, len(samples), q) for q in (0.5, 0.95, 0.99, 1.0)]))
"""


def test_buckets_and_percentiles_match_locust() -> None:
    """Same numbers as Locust's own percentile code (run in a subprocess: Locust's import
    monkey-patches the process with gevent)."""
    samples = np.random.default_rng(4).lognormal(mean=4, sigma=1.2, size=5000).tolist()
    hist = Histogram()
    for ms in samples:
        hist.add(ms)
    proc = subprocess.run([sys.executable, "-c", _LOCUST_PERCENTILES], input=json.dumps(samples),
                          capture_output=True, text=True, timeout=60, check=True)
    expected = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [hist.percentile(q) for q in (0.5, 0.95, 0.99, 1.0)] == expected
    assert expected[0] > 0
    assert Histogram().percentile(0.5) is None


def test_recorder_round_trips_and_merges_parts(tmp_path: Path) -> None:
    a, b = RunRecorder(), RunRecorder()
    for _ in range(9):
        a.record_arms("verify", {"face": "v1", "fingerprint": "v1"}, 20.0)
    b.record_arms("verify", {"face": "v2"}, 40.0)
    b.record_arms("verify", {}, 5.0)
    b.record_stream(ttft_ms=150.0, total_ms=900.0)
    b.record_stream(ttft_ms=None, total_ms=50.0)
    merged = load_parts([a.write(tmp_path / "x"), b.write(tmp_path / "y")])
    face = merged.arms["verify"]["face"]
    assert {arm: h.count for arm, h in face.items()} == {"v1": 9, "v2": 1}
    assert face["v2"].percentile(0.5) == 40.0
    assert merged.arms["verify"]["fingerprint"]["v1"].count == 9
    assert merged.unattributed == 1
    assert merged.ttft.count == 1 and merged.stream_total.count == 2


def test_sse_events_survive_any_chunking() -> None:
    stream = ('event: delta\ndata: {"text": "Acc\u00e9pt"}\n\n: keep-alive\n\n'
              'event: final\r\ndata: {"text": "a",\r\ndata:  "source": "model"}\r\n\r\n').encode()
    expected = [SSEEvent("delta", '{"text": "Acc\u00e9pt"}'), SSEEvent("final", '{"text": "a",\n "source": "model"}')]
    for size in (1, 2, 3, 7, len(stream)):
        parser = SSEParser()
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i:i + size])]
        assert events == expected, size
        assert parser.pending == b""
    assert expected[1].json() == {"text": "a", "source": "model"}


def test_sse_truncated_stream_leaves_pending_bytes() -> None:
    parser = SSEParser()
    assert list(parser.feed(b"event: final\ndata: {")) == []
    assert parser.pending == b"event: final\ndata: {"


@pytest.mark.parametrize(("ms", "bucket"), [(0.4, 0), (99.4, 99), (147, 150), (3432, 3400), (58760, 59000)])
def test_round_ms(ms: float, bucket: int) -> None:
    assert round_ms(ms) == bucket
