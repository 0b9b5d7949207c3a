"""API keys (stored as SHA-256 hashes), scopes and the per-key rate limit, as a FastAPI dependency.

Keys file (``keys_file``)::

    keys:
      - {name: team-a, sha256: <hash_key(key)>, scopes: [client], rate_per_s: 50, burst: 100}

Only hashes are kept: a leaked file or heap dump does not leak usable keys. Keys are high-entropy
random strings, so a plain SHA-256 (not a slow password hash) is the usual and sufficient choice.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.errors import Forbidden, RateLimited, Unauthorized
from router.ratelimit import RateLimiter

Scope = Literal["client", "admin"]


def hash_key(key: str) -> str:
    """The stored form of an API key: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope] = Field(min_length=1)
    rate_per_s: float = Field(50.0, gt=0)
    burst: float = Field(100.0, ge=1)


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[KeyEntry]


@dataclass(frozen=True)
class Principal:
    """Who is calling (never the key itself)."""

    name: str
    scopes: frozenset[str]


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

    def __init__(self, keys: dict[str, KeyEntry] | None, limiter: RateLimiter, on_limited=None) -> None:
        self._keys = keys  # None = auth disabled (development only)
        self._limiter = limiter
        self._on_limited = on_limited or (lambda _name: None)

    def authenticate(self, key: str | None, scope: Scope) -> Principal:
        if self._keys is None:
            return Principal("anonymous", frozenset({"client", "admin"}))
        if not key:
            raise Unauthorized("missing API key: send Authorization: Bearer <key> or X-API-Key")
        digest = hash_key(key)
        entry = self._keys.get(digest)
        # compare_digest on the found hash keeps the check constant-time once a candidate exists.
        if entry is None or not hmac.compare_digest(entry.sha256, digest):
            raise Unauthorized("unknown API key")
        if scope not in entry.scopes:
            raise Forbidden(f"key {entry.name!r} lacks the {scope!r} scope")
        wait_s = self._limiter.check(entry.name, entry.rate_per_s, entry.burst)
        if wait_s > 0:
            self._on_limited(entry.name)
            raise RateLimited(f"rate limit of key {entry.name!r} exceeded ({entry.rate_per_s:g}/s)",
                              retry_after_s=max(1, math.ceil(wait_s)))
        return Principal(entry.name, frozenset(entry.scopes))
