"""API keys (stored as SHA-256 hashes), their tenant and scopes, and the per-key rate limit.

Keys file (``keys_file``)::

    keys:
      - {name: team-a, tenant: acme, sha256: <hash_key(key)>, scopes: [client], rate_per_s: 50, burst: 100}

Only hashes are kept: a leaked file or heap dump does not leak usable keys. Keys are high-entropy
random strings, so a plain SHA-256 (not a slow password hash) is the usual and sufficient choice.

Scopes: ``client`` (the API v1), ``pin`` (choose an arm with the pin header), ``enroll:replace``
(re-enrol an existing subject), ``admin`` (the admin API). Scopes are explicit: an operator's key
lists each one it needs (``admin`` alone does not call the API v1). A key without ``tenant``
belongs to ``default``, the tenant of rows written before tenants existed.

:class:`KeyRing` re-reads the file when it changes (polled like the policy): a revoked key is
refused from the next request on, requests already authenticated finish. A file that does not
parse or validate is refused whole; the keys in force stay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.db import DEFAULT_TENANT
from router.errors import Forbidden, RateLimited, Unauthorized
from router.ratelimit import RateLimiter

log = logging.getLogger(__name__)

Scope = Literal["client", "pin", "enroll:replace", "admin"]
ALL_SCOPES: tuple[Scope, ...] = ("client", "pin", "enroll:replace", "admin")
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


def hash_key(key: str) -> str:
    """The stored form of an API key: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str = Field(DEFAULT_TENANT, pattern=TENANT_PATTERN)
    scopes: list[Scope] = Field(min_length=1)
    rate_per_s: float = Field(50.0, gt=0)
    burst: float = Field(100.0, ge=1)


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[KeyEntry]


@dataclass(frozen=True)
class Principal:
    """Who is calling (never the key itself): the key's name, its tenant and scopes."""

    name: str
    scopes: frozenset[str]
    tenant: str = DEFAULT_TENANT

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes

    def require(self, scope: Scope, what: str) -> None:
        """Raise :class:`Forbidden` unless the key holds ``scope``; ``what`` names the action refused."""
        if not self.allows(scope):
            raise Forbidden(f"key {self.name!r} lacks the {scope!r} scope needed to {what}")


def load_keys(path: Path) -> dict[str, KeyEntry]:
    """Read and validate the keys file; refuse duplicates. Raises ValueError with the reason."""
    try:
        parsed = KeysFile.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"keys file {path}: {exc}") from exc
    by_hash: dict[str, KeyEntry] = {}
    for entry in parsed.keys:
        if entry.sha256 in by_hash:
            raise ValueError(f"keys file {path}: duplicate key hash for {entry.name!r}")
        by_hash[entry.sha256] = entry
    return by_hash


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(mtime, size, inode) of the keys file, None when it is missing: a change of any is a change."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class KeyRing:
    """The keys in force (``.keys``, hash -> entry), kept in step with the keys file.

    Args:
        path: the keys file.
        on_reload_result: called with ``file`` (new keys in force) or ``invalid`` (change refused).
    """

    def __init__(self, path: Path, on_reload_result: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._on_result = on_reload_result or (lambda _result: None)
        self._signature = file_signature(path)
        self.keys = load_keys(path)

    def check_file(self) -> bool:
        """Reload if the file changed; True when new keys were put in force. Blocking: run in a thread."""
        sig = file_signature(self.path)
        if sig is None or sig == self._signature:
            return False
        self._signature = sig
        try:
            keys = load_keys(self.path)
        except (ValueError, OSError) as exc:
            log.error("keys file change refused, keeping the %d keys in force: %s", len(self.keys), exc)
            self._on_result("invalid")
            return False
        self.keys = keys  # one reference swap: a request reads the dict once
        log.info("keys file reloaded: %d keys in force", len(keys))
        self._on_result("file")
        return True

    async def watch(self, poll_s: float) -> None:
        """Poll the file forever (cancel to stop); the stat and the parse run in a worker thread.
        Polling, not inotify: Secret and ConfigMap volumes swap symlinks."""
        while True:
            await asyncio.sleep(poll_s)
            try:
                await asyncio.to_thread(self.check_file)
            except Exception:  # a watcher that dies silently would keep revoked keys alive: log, go on
                log.exception("keys watcher iteration failed")


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class Authenticator:
    """Resolve a presented key to a :class:`Principal`, enforce its scope and its rate limit."""

    def __init__(self, keys: KeyRing | None, limiter: RateLimiter, on_limited=None) -> None:
        self._ring = keys  # None = auth disabled (development only)
        self._limiter = limiter
        self._on_limited = on_limited or (lambda _name: None)

    def authenticate(self, key: str | None, scope: Scope) -> Principal:
        if self._ring is None:
            return Principal("anonymous", frozenset(ALL_SCOPES))
        if not key:
            raise Unauthorized("missing API key: send Authorization: Bearer <key> or X-API-Key")
        digest = hash_key(key)
        entry = self._ring.keys.get(digest)
        # compare_digest on the found hash keeps the check constant-time once a candidate exists.
        if entry is None or not hmac.compare_digest(entry.sha256, digest):
            raise Unauthorized("unknown API key")
        principal = Principal(entry.name, frozenset(entry.scopes), entry.tenant)
        if not principal.allows(scope):
            raise Forbidden(f"key {entry.name!r} lacks the {scope!r} scope")
        wait_s = self._limiter.check(entry.name, entry.rate_per_s, entry.burst)
        if wait_s > 0:
            self._on_limited(entry.name)
            raise RateLimited(f"rate limit of key {entry.name!r} exceeded ({entry.rate_per_s:g}/s)",
                              retry_after_s=max(1, math.ceil(wait_s)))
        return principal
