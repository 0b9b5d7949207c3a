"""The canary's state: what a restarted controller needs to resume, persisted as one JSON file.

The file is the source of truth between processes: ``servestack canary abort`` in one terminal
writes ``phase: failed`` and the controller running in another notices it before its next step
(it re-reads the file each interval) instead of overwriting it.

Writes are atomic (temp file in the same directory, fsync, ``os.replace``): a crash mid-write
leaves the previous state, never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Flagger's phases, reduced to the ones a weight-shifting canary passes through.
Phase = Literal["initializing", "progressing", "succeeded", "failed"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed"})
EventKind = Literal["start", "advance", "hold", "halt", "promote", "rollback", "abort", "resume"]
MAX_EVENTS = 200  # the file stays small; the full history is in the controller's log


class CanaryEvent(BaseModel):
    """One step of the analysis, as shown by ``servestack canary status`` and logged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: float = Field(description="unix time")
    kind: EventKind
    reason: str
    canary_weight: float
    failed_checks: int


class CanaryState(BaseModel):
    """Where one route's canary stands. Immutable: the analysis returns a new one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: str
    stable_arm: str
    canary_arm: str
    canary_backend: str | None = Field(
        None, description="the canary arm's backend: requests it left to a fallback count as its failures")
    phase: Phase = "initializing"
    canary_weight: float = Field(0.0, ge=0, le=100, description="percent of the route's traffic")
    failed_checks: int = Field(0, ge=0)
    iterations: int = Field(0, ge=0, description="analysis intervals judged so far")
    last_reason: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    events: list[CanaryEvent] = Field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def weights(self) -> dict[str, float]:
        """The arm weights this state stands for (percent; the two arms sum to 100)."""
        return {self.stable_arm: 100.0 - self.canary_weight, self.canary_arm: self.canary_weight}

    def with_event(self, event: CanaryEvent) -> CanaryState:
        return self.model_copy(update={"events": [*self.events, event][-MAX_EVENTS:], "updated_at": event.at})


class StateStore:
    """One JSON file per route under ``directory`` (``<state-dir>/canary/<route>.json`` locally)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, route: str) -> Path:
        return self.directory / f"{route}.json"

    def load(self, route: str) -> CanaryState | None:
        path = self.path(route)
        if not path.exists():
            return None
        return CanaryState.model_validate_json(path.read_text())

    def save(self, state: CanaryState) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(state.route)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{state.route}-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(state.model_dump(mode="json"), indent=2))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
