"""The summary of a load-test run: from Locust's CSV tables and the per-arm parts to
summary.json / summary.md, and the pass/fail verdict against limits.

Pure functions over files; no Locust import, so the CI gate can be tested on CSV fixtures.

Limits: the error rate is failures / requests over the whole run. The p99 limit applies to every
endpoint's own p99 except streamed explanations, whose duration is LLM generation time (their
time to first token is reported separately): an aggregate p99 over a mix would let a slow,
rare endpoint hide behind a fast, frequent one, or fail a run for the stream's length.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from load_tests.recorder import EXTRA_PREFIX, RunRecorder, load_parts

FINAL_STATS_CSV = "stats_final.csv"
FINAL_FAILURES_CSV = "failures_final.csv"
STREAM_MARKER = "/explanation"  # endpoints whose latency is a whole SSE stream


@dataclass(frozen=True)
class EndpointStats:
    method: str
    name: str
    requests: int
    failures: int
    rps: float
    avg_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class FailureRow:
    method: str
    name: str
    error: str
    count: int


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def read_stats_csv(path: Path) -> tuple[list[EndpointStats], EndpointStats]:
    """Rows of Locust's `*_stats.csv`: (per endpoint, the Aggregated row)."""
    rows: list[EndpointStats] = []
    total: EndpointStats | None = None
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            entry = EndpointStats(
                method=rec["Type"], name=rec["Name"], requests=int(rec["Request Count"]),
                failures=int(rec["Failure Count"]), rps=_num(rec["Requests/s"]) or 0.0,
                avg_ms=_num(rec["Average Response Time"]), p50_ms=_num(rec["50%"]), p95_ms=_num(rec["95%"]),
                p99_ms=_num(rec["99%"]), max_ms=_num(rec["Max Response Time"]),
            )
            if entry.name == "Aggregated" and not entry.method:
                total = entry
            else:
                rows.append(entry)
    if total is None:
        raise ValueError(f"{path}: no Aggregated row (not a Locust stats CSV?)")
    return rows, total


def read_failures_csv(path: Path) -> list[FailureRow]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return [FailureRow(r["Method"], r["Name"], r["Error"], int(r["Occurrences"])) for r in csv.DictReader(fh)]


_HTTP = re.compile(r"HTTP (\d{1,3})\b")
_LOCUST_CODE = re.compile(r"code=(\d{3})\b")


def status_of(error: str) -> str:
    """Group a Locust error text: an HTTP status ("503"), "connection", "sse", "protocol" or "other".

    Texts come from load_tests.users ("HTTP 503 overloaded", "HTTP 0 ConnectionRefusedError",
    "SSE ...", "protocol: ...") wrapped by Locust (e.g. "CatchResponseError('HTTP 503 ...')"), or from
    Locust itself for requests made without catch_response ("BadStatusCode(..., code=503)").
    """
    if match := _HTTP.search(error) or _LOCUST_CODE.search(error):
        return "connection" if match.group(1) == "0" else match.group(1)
    if "SSE" in error:
        return "sse"
    if "protocol:" in error:
        return "protocol"
    return "other"


def errors_by_status(failures: Iterable[FailureRow]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for row in failures:
        counts[status_of(row.error)] += row.count
    return dict(sorted(counts.items()))


def arm_table(recorder: RunRecorder) -> list[dict[str, Any]]:
    """One row per (endpoint, modality, arm) with its share of that modality's requests."""
    rows: list[dict[str, Any]] = []
    for endpoint, by_modality in sorted(recorder.arms.items()):
        for modality, by_arm in sorted(by_modality.items()):
            total = sum(h.count for h in by_arm.values())
            for arm, hist in sorted(by_arm.items()):
                rows.append({"endpoint": endpoint, "modality": modality, "arm": arm,
                             "share": hist.count / total if total else 0.0, **hist.quantiles()})
    return rows


def build_summary(
    rows: Sequence[EndpointStats],
    total: EndpointStats,
    failures: Sequence[FailureRow],
    recorder: RunRecorder,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The summary as a JSON-able dict (thresholds are applied by `apply_limits`)."""
    return {
        **meta,
        "totals": {**asdict(total), "error_rate": total.error_rate},
        "endpoints": [{**asdict(r), "error_rate": r.error_rate} for r in rows],
        "errors_by_status": errors_by_status(failures),
        "errors": [asdict(f) for f in failures],
        "arms": arm_table(recorder),
        "unattributed": recorder.unattributed,
        "explanations": {"ttft": recorder.ttft.quantiles(), "stream": recorder.stream_total.quantiles()},
    }


def violations(summary: Mapping[str, Any], max_error_rate: float | None, max_p99_ms: float | None) -> list[str]:
    """Readable reasons the run fails its limits (empty: it passes)."""
    reasons: list[str] = []
    totals = summary["totals"]
    if totals["requests"] == 0:
        return ["no request completed"]
    if max_error_rate is not None and totals["error_rate"] > max_error_rate:
        reasons.append(f"error rate {totals['error_rate']:.2%} > {max_error_rate:.2%} "
                       f"({totals['failures']} of {totals['requests']} requests failed)")
    if max_p99_ms is not None:
        for row in summary["endpoints"]:
            if STREAM_MARKER in row["name"] or row["p99_ms"] is None:
                continue
            if row["p99_ms"] > max_p99_ms:
                reasons.append(f"p99 of {row['method']} {row['name']} {row['p99_ms']:.0f} ms > {max_p99_ms:.0f} ms")
    return reasons


def apply_limits(summary: dict[str, Any], max_error_rate: float | None, max_p99_ms: float | None) -> dict[str, Any]:
    reasons = violations(summary, max_error_rate, max_p99_ms)
    summary["limits"] = {"max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms}
    summary["violations"] = reasons
    summary["passed"] = not reasons
    return summary


def summarize_dir(out_dir: Path, csv_prefix: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Summary of a run directory: the final tables when the users wrote them, else Locust's CSVs."""
    stats_path = out_dir / FINAL_STATS_CSV
    failures_path = out_dir / FINAL_FAILURES_CSV
    if not stats_path.exists():
        stats_path = out_dir / f"{csv_prefix}_stats.csv"
        failures_path = out_dir / f"{csv_prefix}_failures.csv"
    rows, total = read_stats_csv(stats_path)
    recorder = load_parts(sorted(out_dir.glob(f"{EXTRA_PREFIX}*.json")))
    return build_summary(rows, total, read_failures_csv(failures_path), recorder,
                         {**meta, "stats_source": stats_path.name})


# --- Markdown -------------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_markdown(summary: Mapping[str, Any]) -> str:
    t = summary["totals"]
    duration = summary.get("duration_s")
    duration_text = f"{duration:g}" if isinstance(duration, int | float) else "?"
    verdict = "PASSED" if summary.get("passed", True) else "FAILED"
    lines = [
        f"# Load test `{summary.get('scenario', '?')}`: {verdict}",
        "",
        f"Target {summary.get('host', '?')}, {summary.get('users', '?')} users, "
        f"{duration_text} s, shape {summary.get('shape') or 'constant'}, "
        f"started {summary.get('started_at', '?')}.",
        "",
        "| requests | failures | error rate | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {t['requests']} | {t['failures']} | {t['error_rate']:.2%} | {t['rps']:.1f} | {_ms(t['p50_ms'])} | "
        f"{_ms(t['p95_ms'])} | {_ms(t['p99_ms'])} | {_ms(t['max_ms'])} |",
        "",
        "## Endpoints",
        "",
        "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in summary["endpoints"]:
        lines.append(f"| {r['method']} {r['name']} | {r['requests']} | {r['failures']} | {r['rps']:.1f} | "
                     f"{_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | {_ms(r['p99_ms'])} |")
    if summary["arms"]:
        lines += ["", "## Arms", "", "Which arm served each modality (from the responses).", "",
                  "| endpoint | modality | arm | requests | share | p50 ms | p95 ms | p99 ms |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for a in summary["arms"]:
            lines.append(f"| {a['endpoint']} | {a['modality']} | {a['arm']} | {a['count']} | {a['share']:.1%} | "
                         f"{_ms(a['p50_ms'])} | {_ms(a['p95_ms'])} | {_ms(a['p99_ms'])} |")
    explanations = summary["explanations"]
    if explanations["stream"]["count"]:
        ttft, stream = explanations["ttft"], explanations["stream"]
        lines += ["", "## Streamed explanations", "",
                  "| measure | count | p50 ms | p95 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: |",
                  f"| time to first event | {ttft['count']} | {_ms(ttft['p50_ms'])} | {_ms(ttft['p95_ms'])} | "
                  f"{_ms(ttft['p99_ms'])} |",
                  f"| whole stream | {stream['count']} | {_ms(stream['p50_ms'])} | {_ms(stream['p95_ms'])} | "
                  f"{_ms(stream['p99_ms'])} |"]
    if summary["errors"]:
        lines += ["", "## Errors", "", "By status: " + ", ".join(
            f"{k}: {v}" for k, v in summary["errors_by_status"].items()), "",
            "| endpoint | error | count |", "| --- | --- | ---: |"]
        for e in summary["errors"]:
            lines.append(f"| {e['method']} {e['name']} | {e['error'].replace('|', '/')} | {e['count']} |")
    if "limits" in summary:
        limits = summary["limits"]
        rate = "none" if limits["max_error_rate"] is None else f"{limits['max_error_rate']:g}"
        p99 = "none" if limits["max_p99_ms"] is None else f"{limits['max_p99_ms']:g} ms"
        lines += ["", "## Limits", "", f"max error rate {rate}, max p99 {p99}: "
                  + ("all met." if not summary["violations"] else "; ".join(summary["violations"]) + ".")]
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, summary: Mapping[str, Any]) -> tuple[Path, Path]:
    json_path, md_path = out_dir / "summary.json", out_dir / "summary.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    md_path.write_text(render_markdown(summary))
    return json_path, md_path
