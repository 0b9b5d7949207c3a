"""Write ``explain_corpus.jsonl``: the fixed corpus of audit records the explanation bench runs.

Deterministic (a seeded ``random.Random``): rerunning it rewrites the same file. Each line is
``{"kind": <decision kind>, "record": <AuditFacts JSON>}``. Every kind mixes accept and reject,
distances near the threshold (within 3) and far from it, thresholds 5..50, and the arms and
backends the router serves with (primary and canary arms, fallbacks).

    python tests/llm_serving/data/make_explain_corpus.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root: llm_serving's schemas validate each record

from llm_serving.facts import check_consistent  # noqa: E402
from llm_serving.schemas import AuditFacts  # noqa: E402

OUT = HERE / "explain_corpus.jsonl"
SEED = 18
PER_KIND = 30
KINDS = ("one_modality", "two_modalities", "fallback", "canary", "client_threshold", "missing_modality",
         "subject_locked", "combined")
ENGINES = {"face": [("onnxruntime", "int8"), ("openvino", "bf16"), ("torch", "fp32")],
           "fingerprint": [("openvino", "int8"), ("onnxruntime", "fp32"), ("torch", "bf16")]}


def _fused_target(rng: random.Random, threshold: int, accept: bool, near: bool) -> float:
    if accept:
        low, high = (max(0, threshold - 3), threshold) if near else (0, max(0, threshold - 6))
    else:
        low, high = (threshold + 1, threshold + 3) if near else (threshold + 8, min(128, threshold + 70))
    return rng.randint(low, high) + (0.5 if rng.random() < 0.3 and high > low else 0.0)


def _modality(rng: random.Random, name: str, distance: int, *, canary: bool, fallback: bool) -> dict:
    backend, precision = rng.choice(ENGINES[name])
    arm = rng.choice(["v2", "canary-3", "b"]) if canary else rng.choice(["v1", "stable", "a"])
    fallbacks = [rng.choice(["tensorrt", "torch-cuda", "onnxruntime-gpu"])] if fallback else []
    return {"modality": name, "distance": distance, "arm": arm, "model_version": str(rng.randint(1, 3)),
            "precision": precision, "backend": backend, "fallbacks": fallbacks, "canary": canary}


def _distances(rng: random.Random, fused: float, count: int) -> list[int]:
    if count == 1:
        return [int(fused)]
    total = int(round(fused * 2))
    first = rng.randint(max(0, total - 128), min(128, total))
    return [first, total - first]


def make_record(rng: random.Random, kind: str, index: int) -> dict:
    accept, near = index % 2 == 0, (index // 2) % 2 == 0
    threshold = rng.randint(5, 50)
    audit_id = f"corpus-{kind}-{index:03d}"
    if kind == "subject_locked":
        return {"audit_id": audit_id, "kind": "subject_locked", "decision": "reject", "threshold": threshold}
    count = 2 if kind in ("two_modalities", "combined") or (kind in ("fallback", "canary", "client_threshold")
                                                            and rng.random() < 0.5) else 1
    fused = _fused_target(rng, threshold, accept, near)
    if count == 1:
        fused = float(int(fused))
    names = ["face", "fingerprint"] if count == 2 else [rng.choice(["face", "fingerprint"])]
    distances = _distances(rng, fused, count)
    flagged = rng.randrange(count)  # the modality that took the fallback / the canary arm
    modalities = [
        _modality(rng, name, d, canary=kind in ("canary", "combined") and i == flagged,
                  fallback=kind in ("fallback", "combined") and i == flagged)
        for i, (name, d) in enumerate(zip(names, distances, strict=True))
    ]
    record = {"audit_id": audit_id, "decision": "accept" if sum(distances) / count <= threshold else "reject",
              "threshold": threshold, "fused_distance": sum(distances) / count, "modalities": modalities}
    if kind in ("client_threshold", "combined"):
        record["threshold_source"] = "client"
    if kind == "missing_modality":
        record["missing_modalities"] = ["fingerprint" if names[0] == "face" else "face"]
    return record


def build() -> list[dict]:
    rng = random.Random(SEED)
    lines = []
    for kind in KINDS:
        for index in range(PER_KIND):
            record = make_record(rng, kind, index)
            facts = AuditFacts.model_validate(record)
            problem = check_consistent(facts)
            assert problem is None, f"{record['audit_id']}: {problem}"
            lines.append({"kind": kind, "record": record})
    return lines


def main() -> int:
    lines = build()
    OUT.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    sys.stdout.write(f"wrote {len(lines)} records to {OUT}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
