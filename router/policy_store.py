"""Where the live policy is held, kept in step with its source, and changed through the admin API.

Reload never disturbs requests in flight: a request reads ``holder.current`` once and keeps that
immutable :class:`TrafficPolicy` to its end; a reload builds a new one and swaps the reference.
An invalid document is refused whole (the old policy stays) and counted.

Versions come from the document, not from the process, so every replica that reads the same
source reports the same version (``servestack_router_policy_version``):

- ``version:`` (a top-level integer in the YAML, 1 when absent) is bumped by every admin write;
- the ETag is ``"<version>-<digest>"``, the digest taken over the document's text, so a hand edit
  that forgets to bump ``version`` still changes it and an ``If-Match`` from before the edit fails.

Writes are read-modify-write over the source's compare-and-swap (:mod:`router.policy_sources`):
read the document, check ``If-Match`` against it, apply the change to *that* document, write it
only if the source still holds what was read, else read again. Two concurrent writers therefore
both land (without ``If-Match``) or one gets 412 (with it); neither is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import ValidationError

from router.errors import PolicyInvalid, Unavailable, VersionConflict
from router.policy import PolicySpec, TrafficPolicy
from router.policy_sources import PolicySource, Snapshot, SourceConflict, SourceUnavailable

log = logging.getLogger(__name__)

Listener = Callable[[TrafficPolicy], None]
Change = Callable[[PolicySpec], PolicySpec]
VERSION_KEY = "version"
WRITE_ATTEMPTS = 8  # compare-and-swap rounds before a write gives up (each one lost to another writer)


def _load_yaml(text: str, origin: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyInvalid(f"{origin}: not valid YAML: {exc}") from exc


def parse_document(text: str, origin: str = "policy") -> tuple[int, PolicySpec]:
    """YAML text -> (document version, validated :class:`PolicySpec`), or :class:`PolicyInvalid`."""
    data = _load_yaml(text, origin)
    version: Any = data.get(VERSION_KEY, 1) if isinstance(data, dict) else 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise PolicyInvalid(f"{origin}: {VERSION_KEY} must be a non-negative integer, got {version!r}")
    return version, validate_policy(data, origin)


def parse_policy(text: str, origin: str = "policy") -> PolicySpec:
    """YAML text -> validated :class:`PolicySpec`, or :class:`PolicyInvalid` saying what is wrong."""
    return parse_document(text, origin)[1]


def validate_policy(data: object, origin: str = "policy") -> PolicySpec:
    """A mapping -> :class:`PolicySpec` (a ``version`` key is the document's, not the spec's)."""
    if not isinstance(data, dict):
        raise PolicyInvalid(f"{origin}: expected a mapping with backends and routes")
    data = {k: v for k, v in data.items() if k != VERSION_KEY}
    try:
        return PolicySpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:10]
        )
        raise PolicyInvalid(f"{origin}: {problems}") from exc


def render_document(version: int, spec: PolicySpec) -> str:
    """The YAML a write stores: ``version`` first, then the spec."""
    return yaml.safe_dump({VERSION_KEY: version, **spec.model_dump(mode="json", exclude_none=True)}, sort_keys=False)


def etag_of(version: int, text: str) -> str:
    """The policy's ETag value (unquoted): the document version and a digest of its text."""
    return f"{version}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def matches(if_match: str, etag: str) -> bool:
    """RFC 9110 If-Match: ``*`` or a list of quoted tags (``W/`` tags never match a strong ETag)."""
    tags = [t.strip() for t in if_match.split(",")]
    return "*" in tags or f'"{etag}"' in tags


class PolicyHolder:
    """Holds the current :class:`TrafficPolicy` (``.current``, ETag ``.etag``) in step with its source."""

    def __init__(self, source: PolicySource, on_reload_result: Callable[[str], None] | None = None) -> None:
        self.source = source
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._on_result = on_reload_result or (lambda _result: None)
        self._token: str | None = None
        self._current: TrafficPolicy | None = None
        self.etag = ""

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> TrafficPolicy:
        """The policy in force (a request reads it once and keeps it)."""
        if self._current is None:
            raise RuntimeError("no policy loaded yet: load() or load_snapshot() first")
        return self._current

    def load_snapshot(self, snap: Snapshot) -> None:
        """Put the first document in force (raises :class:`PolicyInvalid`: a router must not start on it)."""
        version, spec = parse_document(snap.text, self.source.origin)
        self._install(snap, version, spec)

    async def load(self) -> None:
        try:
            snap = await self.source.read()
        except SourceUnavailable as exc:
            raise Unavailable(f"policy source: {exc}") from exc
        self.load_snapshot(snap)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(policy)`` now and after every swap (balancer pools, weight gauges)."""
        self._listeners.append(listener)
        if self._current is not None:
            listener(self._current)

    def _install(self, snap: Snapshot, version: int, spec: PolicySpec) -> TrafficPolicy:
        policy = TrafficPolicy(spec, version=version)
        self._current, self.etag, self._token = policy, etag_of(version, snap.text), snap.token
        for listener in self._listeners:
            listener(policy)
        log.info("policy version %d (%s) in force (routes: %s)", version, self.etag, ", ".join(spec.routes))
        return policy

    async def update(self, change: Change, if_match: str | None = None) -> TrafficPolicy:
        """Apply ``change`` to the source's latest document and write it (compare-and-swap).

        Raises:
            VersionConflict: ``if_match`` does not match the document in the source.
            PolicyInvalid: ``change`` refused the document or produced an invalid one.
            Unavailable: the source cannot be read or written, or writers kept racing.
        """
        async with self._lock:
            for _attempt in range(WRITE_ATTEMPTS):
                try:
                    snap = await self.source.read()
                except SourceUnavailable as exc:
                    raise Unavailable(f"policy source: {exc}") from exc
                try:
                    version, spec = parse_document(snap.text, self.source.origin)
                    etag = etag_of(version, snap.text)
                except PolicyInvalid:
                    # A broken hand edit sits in the source and the previous policy is in force:
                    # the change applies to what is in force, and its write repairs the source.
                    version, spec, etag = self.current.version, self.current.spec, self.etag
                if if_match is not None and not matches(if_match, etag):
                    raise VersionConflict(f"If-Match {if_match} does not match the policy in force, "
                                          f'"{etag}": read it again and retry')
                text = render_document(version + 1, change(spec))
                try:
                    written = await self.source.write(text, snap)
                except SourceConflict:
                    continue  # someone wrote in between: re-read, re-check If-Match, re-apply
                except SourceUnavailable as exc:
                    raise Unavailable(f"policy source: {exc}") from exc
                policy = self._install(written, version + 1, parse_document(text, self.source.origin)[1])
                self._on_result("admin")
                return policy
            raise Unavailable(f"policy source: {WRITE_ATTEMPTS} writes in a row lost the race; retry")

    async def check(self) -> bool:
        """Reload if the source holds a new document; True when a new policy was put in force."""
        async with self._lock:
            snap = await self.source.read()
            if snap.token == self._token:
                return False
            try:
                version, spec = parse_document(snap.text, self.source.origin)
            except PolicyInvalid as exc:
                self._token = snap.token  # refused once, counted once
                version_now = self._current.version if self._current else 0
                log.error("policy change refused, keeping version %d: %s", version_now, exc)
                self._on_result("invalid")
                return False
            self._install(snap, version, spec)
            self._on_result("source")
            return True

    async def watch(self, poll_s: float) -> None:
        """Poll the source forever (cancel to stop). Polling, not inotify: ConfigMap volumes swap symlinks."""
        while True:
            await asyncio.sleep(poll_s)
            try:
                await self.check()
            except SourceUnavailable as exc:
                log.warning("policy source unreachable, keeping version %s: %s", self.etag, exc)
                self._on_result("unavailable")
            except Exception:  # a watcher that dies silently would freeze the policy: log and go on
                log.exception("policy watcher iteration failed")
