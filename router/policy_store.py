"""Where the live policy is held, reloaded from its file, and replaced through the admin API.

Reload never disturbs requests in flight: a request reads ``holder.current`` once and keeps that
immutable :class:`TrafficPolicy` to its end; a reload builds a new one and swaps the reference.
An invalid file is refused whole (the old policy stays) and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from router.errors import PolicyInvalid
from router.policy import PolicySpec, TrafficPolicy

log = logging.getLogger(__name__)

Listener = Callable[[TrafficPolicy], None]


def parse_policy(text: str, origin: str = "policy") -> PolicySpec:
    """YAML text -> validated :class:`PolicySpec`, or :class:`PolicyInvalid` saying what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyInvalid(f"{origin}: not valid YAML: {exc}") from exc
    return validate_policy(data, origin)


def validate_policy(data: object, origin: str = "policy") -> PolicySpec:
    if not isinstance(data, dict):
        raise PolicyInvalid(f"{origin}: expected a mapping with backends and routes")
    try:
        return PolicySpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:10]
        )
        raise PolicyInvalid(f"{origin}: {problems}") from exc


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(mtime, size, inode) of a watched file, None when it is missing: a change of any is a change."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PolicyHolder:
    """Holds the current :class:`TrafficPolicy` (``.current``) and keeps it in step with its file."""

    def __init__(self, path: Path, on_reload_result: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._on_result = on_reload_result or (lambda _result: None)
        self._signature = file_signature(path)
        self.current = TrafficPolicy(parse_policy(path.read_text(), str(path)), version=1)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(policy)`` now and after every swap (balancer pools, weight gauges)."""
        self._listeners.append(listener)
        listener(self.current)

    def _swap(self, spec: PolicySpec) -> TrafficPolicy:
        policy = TrafficPolicy(spec, version=self.current.version + 1)
        self.current = policy
        for listener in self._listeners:
            listener(policy)
        log.info("policy version %d in force (routes: %s)", policy.version, ", ".join(spec.routes))
        return policy

    async def replace(self, spec: PolicySpec) -> TrafficPolicy:
        """Persist ``spec`` to the file (atomically) and put it in force."""
        async with self._lock:
            text = yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
            await asyncio.to_thread(self._write_atomic, text)
            self._signature = file_signature(self.path)
            policy = self._swap(spec)
            self._on_result("admin")
            return policy

    def _write_atomic(self, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".policy-", suffix=".yaml")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def check_file(self) -> bool:
        """Reload if the file changed; True when a new policy was put in force."""
        async with self._lock:
            sig = await asyncio.to_thread(file_signature, self.path)
            if sig is None or sig == self._signature:
                return False
            self._signature = sig
            try:
                text = await asyncio.to_thread(self.path.read_text)
                spec = parse_policy(text, str(self.path))
            except (PolicyInvalid, OSError) as exc:
                log.error("policy file change refused, keeping version %d: %s", self.current.version, exc)
                self._on_result("invalid")
                return False
            self._swap(spec)
            self._on_result("file")
            return True

    async def watch(self, poll_s: float) -> None:
        """Poll the file forever (cancel to stop)."""
        await poll_file(self.check_file, poll_s, "policy")


async def poll_file(check: Callable[[], Awaitable[object]], poll_s: float, what: str) -> None:
    """Run ``check()`` every ``poll_s`` until cancelled. Polling, not inotify: ConfigMap and Secret
    volumes swap symlinks. A failed iteration is logged and the next one runs: a watcher that died
    silently would freeze what it watches (the policy, the keys in force)."""
    while True:
        await asyncio.sleep(poll_s)
        try:
            await check()
        except Exception:
            log.exception("%s watcher iteration failed", what)
