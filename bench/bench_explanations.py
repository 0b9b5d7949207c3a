"""Explanations on the fixed corpus: how many the model delivers, why the rest fall back, how fast.

Streams every record of ``tests/llm_serving/data/explain_corpus.jsonl`` through the explainer's
``POST /v1/explain`` (SSE) with N in flight, and reports per decision kind: the share delivered
from the model (``source: "model"``), completeness (every delivered text passes
``llm_serving.sentences.check_complete``), the stream's integrity (the deltas concatenated equal
the final text), p50/p95 latency, the time to the first checked sentence, and the sentence-check
failures by reason. Starts its own explainer (`python -m llm_serving`) unless ``--url`` is given.

    .venv/bin/python bench/bench_explanations.py                 # the whole corpus (240 records)
    .venv/bin/python bench/bench_explanations.py --per-kind 3    # a subset while developing
    .venv/bin/python bench/bench_explanations.py --model-dir DIR # another model (Hugging Face directory)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_explainer import start_explainer  # noqa: E402

from llm_serving.schemas import AuditFacts  # noqa: E402
from llm_serving.sentences import check_complete  # noqa: E402

REPORTS_MEDIANS = True  # one pass over the corpus; percentiles are computed here
CORPUS = REPO / "tests" / "llm_serving" / "data" / "explain_corpus.jsonl"


def load_corpus(per_kind: int | None) -> list[tuple[str, dict]]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    seen: collections.Counter[str] = collections.Counter()
    out = []
    for row in rows:
        if per_kind is not None and seen[row["kind"]] >= per_kind:
            continue
        seen[row["kind"]] += 1
        out.append((row["kind"], row["record"]))
    return out


async def explain_one(http: httpx.AsyncClient, url: str, record: dict) -> dict:
    started = time.perf_counter()
    first, deltas, final = None, [], None
    async with http.stream("POST", f"{url}/v1/explain", json={"record": record, "stream": True},
                           timeout=600) as resp:
        resp.raise_for_status()
        event = None
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "delta":
                    first = first if first is not None else time.perf_counter() - started
                    deltas.append(data["text"])
                elif event == "final":
                    final = data
                else:
                    raise RuntimeError(f"unexpected event {event}: {data}")
    assert final is not None, "the stream ended without a final event"
    return {"final": final, "total_s": time.perf_counter() - started, "first_s": first,
            "stream_ok": "".join(deltas) == final["text"]}


async def run(url: str, corpus: list[tuple[str, dict]], concurrency: int) -> list[tuple[str, dict, dict]]:
    gate = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency + 2)) as http:
        async def one(kind: str, record: dict) -> tuple[str, dict, dict]:
            async with gate:
                return kind, record, await explain_one(http, url, record)

        return await asyncio.gather(*(one(kind, record) for kind, record in corpus))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _reason_key(reason: str) -> str:
    """'attempt 2: threshold sentence number 13 ...' -> 'threshold sentence number N ...'."""
    return re.sub(r"\d+(?:\.\d+)?", "N", reason.split(": ", 1)[-1])


def report(results: list[tuple[str, dict, dict]], model: str, backend: str, command: str) -> str:
    groups: dict[str, list[tuple[dict, dict]]] = collections.defaultdict(list)
    for kind, record, result in results:
        groups[kind].append((record, result))
    groups["all"] = [(record, result) for _, record, result in results]
    lines = [f"Explainer: {model} on {backend}; {len(results)} records of the corpus.", "",
             "| decision kind | records | from the model | complete + grounded | stream = final | "
             "p50 s | p95 s | first checked sentence p50 s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    reasons: collections.Counter[str] = collections.Counter()
    for kind, rows in groups.items():
        n = len(rows)
        from_model = sum(r["final"]["source"] == "model" for _, r in rows)
        complete = sum(check_complete(r["final"]["text"], AuditFacts.model_validate(rec)) is None for rec, r in rows)
        stream_ok = sum(r["stream_ok"] for _, r in rows)
        totals = [r["total_s"] for _, r in rows]
        firsts = [r["first_s"] for _, r in rows if r["first_s"] is not None]
        if kind != "all":
            for _, r in rows:
                reasons.update(_reason_key(f) for f in r["final"].get("check_failures", []))
        lines.append(f"| {kind} | {n} | {100 * from_model / n:.1f} % | {100 * complete / n:.1f} % | "
                     f"{100 * stream_ok / n:.0f} % | {statistics.median(totals):.2f} | {_pct(totals, 0.95):.2f} | "
                     f"{statistics.median(firsts):.2f} |")
    lines += ["", "| sentence-check failure (model output, before retry or template) | count |", "| --- | --- |"]
    lines += [f"| {reason} | {count} |" for reason, count in reasons.most_common(12)] or ["| (none) | 0 |"]
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an explainer already running (default: start one)")
    parser.add_argument("--per-kind", type=int, help="only the first N records of each decision kind")
    parser.add_argument("--quick", action="store_true", help="2 records per kind (a smoke test)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, help="a Hugging Face model directory (default: the shipped model)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".servestack" / "cache")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--request-timeout-s", type=float, default=300,
                        help="the started explainer's deadline per explanation (its default is 30 s; a loaded "
                             "2-core machine with 16 in flight needs more to measure the model, not the queue)")
    args = parser.parse_args(argv)
    per_kind = 2 if args.quick else args.per_kind
    corpus = load_corpus(per_kind)
    proc, url = None, args.url
    if url is None:
        extra = {"SERVESTACK_EXPLAINER_MODEL_DIR": str(args.model_dir)} if args.model_dir else {}
        extra["SERVESTACK_EXPLAINER_REQUEST_TIMEOUT_S"] = str(args.request_timeout_s)
        proc, url = start_explainer(args.threads, args.cache_dir, extra)
    try:
        info = httpx.get(f"{url}/readyz", timeout=10).json()
        started = time.perf_counter()
        results = asyncio.run(run(url, corpus, args.concurrency))
        wall = time.perf_counter() - started
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    if args.json:
        args.json.write_text(json.dumps([{"kind": k, "record": rec, **res} for k, rec, res in results], indent=1))
    command = "python bench/bench_explanations.py" + (f" --per-kind {per_kind}" if per_kind else "") + \
        f" --concurrency {args.concurrency} --threads {args.threads} --request-timeout-s {args.request_timeout_s:g}" + \
        (f" --model-dir {args.model_dir}" if args.model_dir else "")
    print(report(results, info["model"], info["backend"], command))
    print(f"\nWall time {wall:.0f} s at {args.concurrency} in flight.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
