"""The grounding check: does a generated explanation state only what the audit record holds?

The model's structured output separates the stated decision, the numbers it cites and the prose.
The check passes only when
  * the stated decision equals the record's,
  * the prose states that decision and never the opposite one,
  * the prose puts the distance on the correct side of the threshold,
  * every number cited, and every number in the prose, is one of the record's numbers,
  * the prose names no modality the record lacks (small models mix up face and fingerprint).
A failed check names its first reason; the caller retries once, then uses the template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llm_serving.facts import NUMBER_TOLERANCE, allowed_numbers, fmt_number, numbers_in
from llm_serving.schemas import AuditFacts

_NEGATED_ACCEPT = re.compile(
    r"\b(?:not|n't|never|no|failed to|fail to)\s+(?:be\s+|been\s+|a\s+)?"
    r"(?:accept\w*|match\w*|verif\w*|approv\w*|grant\w*|authenticat\w*|succe\w*)",
    re.IGNORECASE,
)
_ACCEPT = re.compile(r"\b(?:accept\w*|match\w*|verified|approv\w*|granted|authenticated|succe\w*)\b", re.IGNORECASE)
_REJECT = re.compile(r"\b(?:reject\w*|denied|deny|declin\w*|mismatch\w*|refus\w*)\b", re.IGNORECASE)
# "above the threshold", "exceeds the threshold of 30", "greater than the threshold"
_ABOVE = re.compile(
    r"\b(?:above|exceed\w*|over|greater than|higher than|more than|larger than)\b[^.;]{0,25}\bthreshold",
    re.IGNORECASE,
)
_BELOW = re.compile(
    r"\b(?:(?<!or )below|under|less than|lower than|smaller than|within)\b[^.;]{0,25}\bthreshold",
    re.IGNORECASE,
)
_MODALITY_WORDS = {
    "face": re.compile(r"\b(?:face|facial)\b", re.IGNORECASE),
    "fingerprint": re.compile(r"\b(?:fingerprints?|finger)\b", re.IGNORECASE),
}

_FUSED_WORDS = re.compile(r"\b(?:fused|fusion|combined|average|averaged|mean|overall)\b", re.IGNORECASE)

# "fingerprint Hamming distance of 47": the first number after a modality's name, same clause.
_MODALITY_NUMBER = {
    name: re.compile(pattern.pattern + r"[^.;,\d]{0,40}?(?<![\w.])(\d+(?:\.\d+)?)", re.IGNORECASE)
    for name, pattern in _MODALITY_WORDS.items()
}


@dataclass(frozen=True)
class StatedExplanation:
    """The model's structured output."""

    decision: str
    explanation: str
    numbers_cited: list[float]


@dataclass(frozen=True)
class GroundingResult:
    ok: bool
    reason: str | None = None


def explanation_schema() -> dict[str, Any]:
    """JSON schema for guided decoding. Decision first, prose next, numbers it cited last."""
    return {
        "type": "object",
        "properties": {
            "decision": {"type": "string", "enum": ["accept", "reject"]},
            "explanation": {"type": "string", "minLength": 20, "maxLength": 600},
            "numbers_cited": {"type": "array", "items": {"type": "number"}, "maxItems": 8},
        },
        "required": ["decision", "explanation", "numbers_cited"],
        "additionalProperties": False,
    }


def parse_stated(raw: str) -> StatedExplanation:
    """Parse the model's JSON; raises ValueError when it is not the schema's shape."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"output is not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValueError("output is not a JSON object")
    decision, text, cited = data.get("decision"), data.get("explanation"), data.get("numbers_cited", [])
    if not isinstance(decision, str) or not isinstance(text, str) or not isinstance(cited, list):
        raise ValueError("output lacks decision, explanation or numbers_cited")
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in cited):
        raise ValueError("numbers_cited holds a non-number")
    return StatedExplanation(decision=decision, explanation=text.strip(), numbers_cited=[float(n) for n in cited])


def _is_allowed(value: float, allowed: set[float]) -> bool:
    return any(abs(value - a) <= NUMBER_TOLERANCE for a in allowed)


def stated_decision(text: str) -> tuple[bool, bool]:
    """(says accept, says reject) for a prose text; negated acceptance counts as rejection."""
    negated = bool(_NEGATED_ACCEPT.search(text))
    rest = _NEGATED_ACCEPT.sub(" ", text)
    return bool(_ACCEPT.search(rest)), negated or bool(_REJECT.search(rest))


def check(stated: StatedExplanation, facts: AuditFacts) -> GroundingResult:
    """Compare a stated explanation with the record. Pure: no model, no I/O."""
    if stated.decision != facts.decision:
        return GroundingResult(False, f"stated decision {stated.decision!r} != record {facts.decision!r}")
    text = stated.explanation
    if not text:
        return GroundingResult(False, "empty explanation")
    says_accept, says_reject = stated_decision(text)
    if facts.decision == "accept" and not says_accept:
        return GroundingResult(False, "prose does not state the decision accept (or states reject)")
    if facts.decision == "reject" and not says_reject:
        return GroundingResult(False, "prose does not state the decision reject (or states accept)")
    for value in stated.numbers_cited:
        if not _is_allowed(value, allowed_numbers(facts)):
            return GroundingResult(False, f"cited number {fmt_number(value)} is not in the record")
    reason = check_claims(text, facts)
    return GroundingResult(reason is None, reason)


def check_claims(text: str, facts: AuditFacts) -> str | None:
    """What ``text`` (a sentence or a whole explanation) claims against the record, or None.

    Unlike ``check`` it does not require the decision to be stated: a sentence about a distance
    need not repeat it; it must never state the opposite one.
    """
    says_accept, says_reject = stated_decision(text)
    if facts.decision == "accept" and says_reject:
        return "prose does not state the decision accept (or states reject)"
    if facts.decision == "reject" and says_accept:
        return "prose does not state the decision reject (or states accept)"
    if facts.decision == "accept" and _ABOVE.search(text):
        return "prose puts the distance above the threshold of an accepted record"
    if facts.decision == "reject" and _BELOW.search(text):
        return "prose puts the distance below the threshold of a rejected record"
    allowed = allowed_numbers(facts)
    for value in numbers_in(text):
        if not _is_allowed(value, allowed):
            return f"number {fmt_number(value)} in the text is not in the record"
    distances = {m.modality: float(m.distance) for m in facts.modalities}
    fused = facts.fused_distance
    for modality, pattern in _MODALITY_NUMBER.items():
        own = distances.get(modality)
        if own is None:
            continue  # naming a modality the record lacks fails below
        # The number right after a modality's name is that modality's own distance (or the threshold
        # or the code length); the fused distance only where the clause says it is the fused one.
        # Regression: "The fingerprint was rejected: its Hamming distance of 36" passed when 36 was
        # the fused distance of a face (72) + fingerprint (0) record.
        # Other numbers there (threshold, model version, code length) are checked against the record
        # as a whole above; here only the mix-ups: another modality's distance, or the fused one.
        mixups = {d for name, d in distances.items() if name != modality}
        if fused is not None:
            mixups.add(float(fused))
        for match in pattern.finditer(text):
            value = float(match.group(1))
            if value == own or value not in mixups:
                continue
            if value == fused and _FUSED_WORDS.search(match.group(0)):
                continue
            kind = "of another modality" if value != fused else "that is the fused one"
            return f"prose gives {modality} the distance {fmt_number(value)} {kind}; its distance is {fmt_number(own)}"
    present = set(distances) | set(facts.missing_modalities)
    for modality, pattern in _MODALITY_WORDS.items():
        if modality not in present and pattern.search(text):
            return f"prose names {modality}, which the record does not hold"
    return None
