"""Explainer throughput: single-stream tokens/s and time to first token; aggregate tokens/s at N concurrent.

Streams /v1/completions (vLLM's OpenAI route of the explainer) with a fixed prompt and
``ignore_eos`` so every request generates exactly ``--max-tokens`` tokens, and times /v1/explain
end to end (template-grounded explanations, JSON-guided). Starts its own explainer
(`python -m llm_serving`, the recommended CPU environment applied) unless ``--url`` is given.

    .venv/bin/python bench/bench_explainer.py --concurrency 1 8 32 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Explain in plain words how a fingerprint scanner compares two fingerprints."
RECORD = {
    "audit_id": "bench", "decision": "accept", "threshold": 30, "fused_distance": 12,
    "modalities": [{"modality": "face", "distance": 12, "arm": "v1", "model_version": "1",
                    "precision": "int8", "backend": "onnxruntime"}],
}


async def one_completion(http: httpx.AsyncClient, url: str, model: str, max_tokens: int) -> tuple[float, float, int]:
    """(ttft_s, total_s, tokens) of one streamed completion."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft, tokens = None, 0
    async with http.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text") and ttft is None:
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return ttft or 0.0, time.perf_counter() - started, tokens


async def run_level(url: str, model: str, concurrency: int, max_tokens: int, rounds: int) -> dict[str, float]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency + 4)) as http:
        await one_completion(http, url, model, 8)  # warm-up
        started = time.perf_counter()
        results = []
        for _ in range(rounds):
            results += await asyncio.gather(*(one_completion(http, url, model, max_tokens) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    tokens = sum(r[2] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "aggregate_tok_s": tokens / wall,
        "per_stream_tok_s": statistics.mean(r[2] / (r[1] - r[0]) for r in results if r[1] > r[0]),
        "ttft_p50_ms": statistics.median(r[0] for r in results) * 1000,
        "ttft_max_ms": max(r[0] for r in results) * 1000,
    }


async def explain_latency(url: str, n: int) -> tuple[float, str]:
    async with httpx.AsyncClient() as http:
        times, sources = [], []
        for i in range(n):
            started = time.perf_counter()
            resp = await http.post(f"{url}/v1/explain", json={"record": {**RECORD, "audit_id": f"b{i}"}}, timeout=600)
            resp.raise_for_status()
            times.append(time.perf_counter() - started)
            sources.append(resp.json()["source"])
    return statistics.median(times) * 1000, ",".join(sorted(set(sources)))


def start_explainer(
    threads: int, cache_dir: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SERVESTACK_EXPLAINER_PORT": str(port), "SERVESTACK_EXPLAINER_THREADS": str(threads),
           "SERVESTACK_EXPLAINER_CACHE_DIR": str(cache_dir), "OTEL_SDK_DISABLED": "true", **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "llm_serving"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("explainer did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an explainer already running (default: start one)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1, help="batches of N concurrent requests per level")
    parser.add_argument("--explain-requests", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".servestack" / "cache")
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_explainer(args.threads, args.cache_dir)
    try:
        info = httpx.get(f"{url}/readyz", timeout=10).json()
        rows = [asyncio.run(run_level(url, info["model"], c, args.max_tokens, args.rounds)) for c in args.concurrency]
        explain_ms, sources = asyncio.run(explain_latency(url, args.explain_requests))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    single = next((r["aggregate_tok_s"] for r in rows if r["concurrency"] == 1), None)
    print(f"Explainer: {info['model']} on {info['backend']}, {args.threads} threads, "
          f"{args.max_tokens} generated tokens per request\n")
    print("| concurrent | requests | aggregate tok/s | per-stream tok/s | TTFT p50 ms | TTFT max ms | x single |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ratio = f"{r['aggregate_tok_s'] / single:.1f}" if single else "-"
        print(f"| {r['concurrency']} | {r['requests']} | {r['aggregate_tok_s']:.1f} | {r['per_stream_tok_s']:.1f} | "
              f"{r['ttft_p50_ms']:.0f} | {r['ttft_max_ms']:.0f} | {ratio} |")
    print(f"\n/v1/explain end to end (sequential, median of {args.explain_requests}): {explain_ms:.0f} ms; "
          f"source: {sources}")
    print(f"\nCommand: .venv/bin/python bench/bench_explainer.py --concurrency {' '.join(map(str, args.concurrency))} "
          f"--max-tokens {args.max_tokens} --rounds {args.rounds} --threads {args.threads}")


if __name__ == "__main__":
    main()
