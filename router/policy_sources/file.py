"""The policy document as a file: read whole, written by compare-and-swap.

The token is a SHA-256 of the bytes, so a hand edit changes it like an API write does. A write
takes an ``fcntl`` lock on a sibling lock file, re-reads the document, compares its token with the
one the writer read, writes a temporary file in the same directory, fsyncs it and renames it over
the document: readers see the old or the new text, never a mix, and two writers (two replicas on
one file, or two requests in one replica) never both win against the same version.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from router.policy_sources import Snapshot, SourceConflict, SourceUnavailable


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FilePolicySource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.origin = str(path)
        self._lock_path = path.with_name(f".{path.name}.lock")

    def read_now(self) -> Snapshot:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise SourceUnavailable(f"{self.path}: {exc}") from exc
        return Snapshot(text, digest(text))

    async def read(self) -> Snapshot:
        return await asyncio.to_thread(self.read_now)

    async def write(self, text: str, expected: Snapshot) -> Snapshot:
        return await asyncio.to_thread(self._write, text, expected)

    def _write(self, text: str, expected: Snapshot) -> Snapshot:
        try:
            lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SourceUnavailable(f"{self._lock_path}: {exc}") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the descriptor closes
            if self.read_now().token != expected.token:
                raise SourceConflict(f"{self.path} changed since it was read")
            self._replace(text)
        finally:
            os.close(lock)
        return Snapshot(text, digest(text))

    def _replace(self, text: str) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".policy-", suffix=".yaml")
        except OSError as exc:
            raise SourceUnavailable(f"{self.path.parent}: {exc}") from exc
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise SourceUnavailable(f"{self.path}: {exc}") from exc
