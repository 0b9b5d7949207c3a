"""Where the policy document lives: one file per source behind :class:`PolicySource`.

- :mod:`.file` — a YAML file (the local stack; replicas sharing one file agree through it);
- :mod:`.configmap` — the router-policy ConfigMap through the Kubernetes API (a cluster).

A source knows nothing of policies: it reads and writes text with an opaque ``token`` that
changes whenever the text does (a content digest, a ``resourceVersion``). ``write`` is a
compare-and-swap: it refuses with :class:`SourceConflict` when the text is no longer the one the
caller read. The policy store builds versions, ETags and retries on top of that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Snapshot:
    """The document's text as read, and the source's token for exactly that text."""

    text: str
    token: str


class SourceConflict(Exception):
    """The document changed since the snapshot a write was based on."""


class SourceUnavailable(Exception):
    """The source could not be read or written (the reason is in the message)."""


class PolicySource(Protocol):
    origin: str  # where the document lives, for messages ("/etc/policy.yaml", "configmap ns/name")

    async def read(self) -> Snapshot:
        """The document now. Raises :class:`SourceUnavailable`."""

    async def write(self, text: str, expected: Snapshot) -> Snapshot:
        """Replace the document with ``text`` if it is still ``expected``.

        Raises:
            SourceConflict: the document changed after ``expected`` was read.
            SourceUnavailable: it could not be written.
        """
