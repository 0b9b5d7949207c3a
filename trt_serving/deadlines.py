"""A request's deadline on the pod, and abandoning its work when the client goes away.

The router sends the time a request has left in ``X-Request-Timeout-Ms``; without it the pod's own
``request_timeout_s`` applies, and the header can only shorten it. The clock starts when the pod
reads the header, so the time spent decoding counts against it as well.

:func:`until_disconnect` runs the work of a request while watching its connection: when the client
hangs up first (the router's try timed out, a caller gave up), the work is cancelled (a queued
request leaves the batch) and the caller answers 499, which no one reads but the metrics count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from trt_serving.errors import InvalidInput

T = TypeVar("T")
TIMEOUT_HEADER = "x-request-timeout-ms"
CLIENT_CLOSED = 499  # nginx's "client closed request": logged and counted, never received


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def deadline_from(headers: Mapping[str, str], default_s: float) -> float:
    """The request's deadline on ``time.monotonic()``'s clock (header in ms, capped by ``default_s``)."""
    raw = headers.get(TIMEOUT_HEADER)
    timeout_s = default_s
    if raw is not None:
        try:
            ms = int(raw)
        except ValueError:
            raise InvalidInput(f"{TIMEOUT_HEADER} must be an integer number of milliseconds, got {raw[:32]!r}",
                               code="invalid_timeout") from None
        if ms < 0:
            raise InvalidInput(f"{TIMEOUT_HEADER} must be >= 0, got {ms}", code="invalid_timeout")
        timeout_s = min(default_s, ms / 1000)
    return time.monotonic() + timeout_s


async def _disconnected(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Return when the client hangs up (call only after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        continue


async def until_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]], work: Coroutine[Any, Any, T]) -> T:
    """``await work``, unless the client disconnects first: then cancel it and raise :class:`ClientGone`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientGone("the client disconnected before its answer was ready")
