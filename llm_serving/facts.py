"""The deterministic side of an explanation: number formatting, the allowed numbers, consistency.

Everything here is a pure function of the audit record (the sentence plan and the template are in
``llm_serving.sentences``).
"""

from __future__ import annotations

import re

from llm_serving.schemas import AuditFacts

CODE_BITS = 128  # length of every hash code (docs/ARCHITECTURE.md); texts may say "128-bit codes"
# Tolerance when comparing numbers: the record's fused distance may be 16.25, a text "16.25".
NUMBER_TOLERANCE = 0.006

# A number standing alone: not part of a word such as "int8", "fp16", "v2" or "arm-3b".
_STANDALONE = re.compile(r"(?<![A-Za-z0-9_.])\d+(?:\.\d+)?(?![A-Za-z_]|\.\d)")
_ANY = re.compile(r"\d+(?:\.\d+)?")


def numbers_in(text: str, *, standalone: bool = True) -> list[float]:
    """Numbers stated in ``text``; ``standalone=False`` also finds digits inside words."""
    pattern = _STANDALONE if standalone else _ANY
    return [float(match) for match in pattern.findall(text)]


def fmt_number(value: float) -> str:
    """30.0 -> "30", 16.5 -> "16.5", 16.25 -> "16.25": how numbers appear in every text."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def allowed_numbers(facts: AuditFacts) -> set[float]:
    """Every number a grounded text may state: the record's numbers and the code length."""
    numbers: set[float] = {float(CODE_BITS), float(facts.threshold), float(len(facts.modalities))}
    if facts.fused_distance is not None:
        numbers.add(float(facts.fused_distance))
    for m in facts.modalities:
        numbers.add(float(m.distance))
        for token in (m.model_version, m.arm, m.precision, m.backend, *m.fallbacks):
            numbers.update(numbers_in(token, standalone=False))
    return numbers


def check_consistent(facts: AuditFacts) -> str | None:
    """Why the record is impossible (decision against its own numbers), or None when it is not."""
    if facts.fused_distance is None:  # subject_locked: nothing compared (the schema checks the rest)
        return None
    distances = [m.distance for m in facts.modalities]
    modalities = [m.modality for m in facts.modalities]
    if len(set(modalities)) != len(modalities):
        return f"modalities must be distinct, got {modalities}"
    mean = sum(distances) / len(distances)
    if abs(mean - facts.fused_distance) > 0.01:
        return f"fused_distance {fmt_number(facts.fused_distance)} is not the mean of the distances {distances}"
    expected = "accept" if facts.fused_distance <= facts.threshold else "reject"
    if facts.decision != expected:
        return (
            f"decision {facts.decision!r} contradicts fused_distance {fmt_number(facts.fused_distance)} "
            f"and threshold {fmt_number(facts.threshold)}"
        )
    return None
