"""Each request's deadline: from ``X-Request-Timeout-Ms``, else the router's default; passed on to pods.

:class:`DeadlineMiddleware` (pure ASGI) fixes the deadline when a request arrives and keeps it in a
context variable for everything the request does (the flows, the hasher calls, their tasks). A
hasher call then sends the pod the time left (same header) and gives up when it runs out; a call
that could not be answered in the time left is not sent at all (:func:`check_time_for`).

A bad header is a 400 ``invalid_timeout``; a longer one than ``max_s`` is capped, silently: the
router bounds the work one request may hold.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from router.errors import BadRequest, RouterError, error_body

HEADER = "x-request-timeout-ms"
DEADLINE_PATHS = frozenset({"/v1/hash", "/v1/verify", "/v1/enroll"})  # the requests that call hashers
_HEADER_BYTES = HEADER.encode()
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("servestack_deadline", default=None)


class InvalidTimeout(BadRequest):
    code = "invalid_timeout"


class DeadlineExceeded(RouterError):
    """No time left to answer within the request's deadline (504 ``deadline_exceeded``)."""

    status = 504
    code = "deadline_exceeded"


def parse_timeout_ms(raw: str | None, default_s: float, max_s: float) -> float:
    """Seconds a request may take: the header's milliseconds (capped at ``max_s``), else ``default_s``."""
    if raw is None:
        return default_s
    try:
        ms = int(raw)
    except ValueError:
        raise InvalidTimeout(f"{HEADER}: expected whole milliseconds, got {raw[:32]!r}") from None
    if ms <= 0:
        raise InvalidTimeout(f"{HEADER}: must be > 0, got {ms}")
    return min(ms / 1000, max_s)


def time_left() -> float | None:
    """Seconds left to the current request's deadline; None outside a request that has one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def set_deadline(timeout_s: float) -> contextvars.Token:
    """Start the current context's deadline ``timeout_s`` from now (tests, background work)."""
    return _deadline.set(time.monotonic() + timeout_s)


def check_time_for(what: str, needed_s: float) -> float | None:
    """The time left, or :class:`DeadlineExceeded` when less than ``needed_s`` remains for ``what``."""
    left = time_left()
    if left is not None and left < needed_s:
        raise DeadlineExceeded(f"{what}: {max(left, 0) * 1000:.0f} ms left of the request's deadline, "
                               f"not enough to be answered in time")
    return left


class DeadlineMiddleware:
    """Pure ASGI: the deadline of every request to ``paths`` (others run without one)."""

    def __init__(self, app: Any, paths: frozenset[str], default_s: float, max_s: float) -> None:
        self.app = app
        self.paths = paths
        self.default_s = default_s
        self.max_s = max_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        raw = next((v.decode("latin-1") for k, v in scope["headers"] if k == _HEADER_BYTES), None)
        try:
            timeout_s = parse_timeout_ms(raw, self.default_s, self.max_s)
        except InvalidTimeout as exc:
            body = error_body(exc.code, exc.message)
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        token = set_deadline(timeout_s)
        try:
            await self.app(scope, receive, send)
        finally:
            _deadline.reset(token)
