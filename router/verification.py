"""The verification domain (docs/ARCHITECTURE.md), pure: Hamming distance, fusion, decision.

A code is 128 bits, carried as 32 hex digits. Fusion is score-level: the mean of the modality
distances, compared against the threshold (accept when fused distance <= threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

CODE_BITS = 128


def parse_code(code: str) -> int:
    """32 hex digits -> int; ValueError otherwise (a pod answering garbage is a pod fault)."""
    if len(code) != CODE_BITS // 4:
        raise ValueError(f"a code has {CODE_BITS // 4} hex digits, got {len(code)}")
    return int(code, 16)


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two 128-bit codes."""
    return (parse_code(a) ^ parse_code(b)).bit_count()


def fuse(distances: Sequence[float]) -> float:
    """Score-level fusion: the mean of the per-modality distances."""
    if not distances:
        raise ValueError("fusion needs at least one distance")
    return sum(distances) / len(distances)


def decide(distance: float, threshold: float) -> Literal["accept", "reject"]:
    return "accept" if distance <= threshold else "reject"
