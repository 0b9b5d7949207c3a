"""The typed rows an experiment report is computed from (one verified modality of one audit record).

``kind`` says how the row's arm was chosen; only ``randomised`` rows (sticky or random bucket,
served by the chosen arm) enter the comparison and the sample-ratio check. The others are counted
apart: ``pinned`` (pin header), ``fallback`` (served by a fallback backend, or by another arm for
lack of a template), ``shadow`` and ``migration`` (mirrored copies, never a client's decision) and
``unknown`` (rows written before the router recorded the kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["randomised", "pinned", "fallback", "shadow", "migration", "unknown"]
KINDS: tuple[Kind, ...] = ("randomised", "pinned", "fallback", "shadow", "migration", "unknown")


def assignment_kind(arm_reason: str, fallbacks: list[str] | tuple[str, ...] = ()) -> Kind:
    """The kind of a verified modality from its ``arm_reason`` and the backends it fell back from."""
    if arm_reason == "pinned":
        return "pinned"
    if arm_reason == "coverage" or fallbacks:
        return "fallback"
    if arm_reason in ("sticky", "random"):
        return "randomised"
    if arm_reason in ("shadow", "migration"):
        return arm_reason  # type: ignore[return-value]
    return "unknown"


@dataclass(frozen=True)
class ExperimentRow:
    """One verified modality on a route, as the report reads it.

    ``decision`` is that modality's own decision (its distance <= threshold), attributable to the
    arm; ``genuine`` is the labelled outcome of the audit record (None until labelled).
    """

    arm: str
    decision: Literal["accept", "reject"] | str
    latency_ms: float
    created_at: float
    subject_id: str = ""
    kind: Kind = "randomised"
    policy_version: int | None = None
    distance: int | None = None
    genuine: bool | None = None
    audit_id: str = ""
