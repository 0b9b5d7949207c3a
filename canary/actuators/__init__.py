"""Where a canary's weights are written: one file per actuator behind :class:`WeightActuator`.

- :mod:`.admin_api` — the router's admin API (the local stack; the router persists the policy);
- :mod:`.configmap` — the router-policy ConfigMap through the official ``kubernetes`` client
  (a cluster; every router replica hot-reloads the mounted file).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class WeightActuator(Protocol):
    async def set_weights(self, route: str, weights: Mapping[str, float]) -> None:
        """Put these arm weights of ``route`` in force (other arms untouched)."""

    async def get_weights(self, route: str) -> dict[str, float]:
        """The arm weights of ``route`` now in force."""

    async def get_backends(self, route: str) -> dict[str, str]:
        """Arm name -> backend name for ``route``."""


class ActuatorError(RuntimeError):
    """The weights could not be written or read (the reason is in the message)."""
