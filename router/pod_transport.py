"""The router's one HTTP path to its pods: a lean HTTP/1.1 keep-alive transport for httpx.

One :class:`PodTransport` sits under the router's one shared ``httpx.AsyncClient`` (hasher and
explainer calls, health probes) and is also what :class:`trt_serving.client.HasherClient` calls
directly through :meth:`PodTransport.request` (bytes in, status/headers/bytes out): the same
connections, timeouts and errors either way, without httpx's request and response models on the
hot path (bench/bench_router.py measures both; BENCHMARKS.md).

httpx's default pool (httpcore over anyio) checks every pooled connection with a readability
syscall on each request (``has_expired`` -> ``is_socket_readable``): with ~35 connections to a
pod under load that, plus anyio's stream layers, was ~40% of the router's event-loop CPU on a
verify (py-spy, BENCHMARKS.md). This transport keeps idle connections per origin in a LIFO stack
and takes one in O(1), on plain asyncio streams.

Scope: plain ``http://`` origins (pods inside the cluster) and responses read whole (hasher JSON);
anything else (https, a request that accepts ``text/event-stream``: the explainer's streamed
answers) goes to httpx's own transport.
Timeouts come from httpx's per-request ``timeout`` extension (connect for the dial, read for the
whole response). Errors are httpx's own exception types, so callers cannot tell the transports
apart. A reused connection that the server closed while idle (keep-alive timeout) is detected
when no response byte arrives, and the request is sent once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping

import httpx

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Headers = list[tuple[bytes, bytes]]


class _Stale(Exception):
    """A reused connection gave no response byte: the server had closed it."""


def _check_header(name: str, value: str) -> None:
    if any(c in name or c in value for c in "\r\n\0"):
        raise ValueError(f"header {name[:40]!r}: names and values may not contain CR, LF or NUL")


class PodTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections per origin, reused newest first.

    Args:
        max_connections_per_origin: open connections to one origin at most; more requests wait.
        max_idle_per_origin: idle connections kept per origin (the rest are closed).
    """

    def __init__(self, max_connections_per_origin: int = 256, max_idle_per_origin: int = 64) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = defaultdict(list)
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._max_conns = max_connections_per_origin
        self._max_idle = max_idle_per_origin
        self._fallback = httpx.AsyncHTTPTransport()
        self._targets: dict[tuple[str, str], tuple[str, int, bytes]] = {}

    async def request(self, method: str, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float
                      ) -> tuple[int, Headers, bytes]:
        """One whole request and response as bytes: the hot path of pod calls (no httpx models).

        ``timeout_s`` bounds the connect and the whole response each. Raises httpx's transport
        errors, like :meth:`handle_async_request`, and ValueError for a header holding CR or LF
        (no header injection).
        """
        for name, value in headers.items():
            _check_header(name, value)
        target = self._targets.get((method, url))
        if target is None:
            parsed = httpx.URL(url)
            if parsed.scheme != "http":
                return await self._via_httpx(method, parsed, body, headers, timeout_s)
            head = (f"{method} {parsed.raw_path.decode('ascii')} HTTP/1.1\r\n"
                    f"host: {parsed.netloc.decode('ascii')}\r\n").encode("ascii")
            if len(self._targets) > 4096:  # pod URLs churn with scaling: bound what is cached
                self._targets.clear()
            target = self._targets[(method, url)] = (parsed.host, parsed.port or 80, head)
        host, port, head = target
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
        length = b"content-length: %d\r\n\r\n" % len(body) if body or method not in ("GET", "HEAD") else b"\r\n"
        status, _, response_headers, content = await self._roundtrip(
            host, port, b"".join((head, extra, length, body)), timeout_s, timeout_s, method == "HEAD", None)
        return status, response_headers, content

    async def _via_httpx(self, method: str, url: httpx.URL, body: bytes, headers: Mapping[str, str],
                         timeout_s: float) -> tuple[int, Headers, bytes]:
        timeout = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        request = httpx.Request(method, url, content=body, headers=headers, extensions={"timeout": timeout})
        response = await self._fallback.handle_async_request(request)
        try:
            async with asyncio.timeout(timeout_s):
                content = await response.aread()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no complete response within {timeout_s} s", request=request) from exc
        finally:
            await response.aclose()
        return response.status_code, response.headers.raw, content

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or "text/event-stream" in request.headers.get("accept", ""):
            return await self._fallback.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        head = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1\r\n".encode()]
        head += [k + b": " + v + b"\r\n" for k, v in request.headers.raw]
        if any(b"\r" in h[:-2] or b"\n" in h[:-2] for h in head):
            raise ValueError("header names and values may not contain CR or LF")  # no header injection
        if body and "content-length" not in request.headers:
            head.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
        status, reason, headers, content = await self._roundtrip(
            url.host, url.port or 80, b"".join(head) + b"\r\n" + body, timeouts.get("connect"),
            timeouts.get("read"), request.method == "HEAD", request)
        return httpx.Response(status, headers=headers, content=content, request=request,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})

    async def _roundtrip(self, host: str, port: int, payload: bytes, connect_timeout: float | None,
                         read_timeout: float | None, head_only: bool, request: httpx.Request | None
                         ) -> tuple[int, bytes, Headers, bytes]:
        """Send ``payload`` (a whole HTTP/1.1 request, head and body) to ``host:port``; read the answer."""
        origin = (host, port)
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self._max_conns)
        async with slots:
            idle = self._idle[origin]
            while idle:
                conn = idle.pop()
                if conn[0].at_eof() or conn[1].is_closing():
                    conn[1].close()
                    continue
                try:
                    return await self._exchange(request, conn, origin, payload, read_timeout, True, head_only)
                except _Stale:
                    continue  # closed by the server while idle: try the next one, then a new one
            conn = await self._connect(request, origin, connect_timeout)
            return await self._exchange(request, conn, origin, payload, read_timeout, False, head_only)

    async def _connect(self, request: httpx.Request | None, origin: tuple[str, int], timeout: float | None) -> _Conn:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.open_connection(*origin)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect to {origin[0]}:{origin[1]} timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def _exchange(self, request: httpx.Request | None, conn: _Conn, origin: tuple[str, int], payload: bytes,
                        timeout: float | None, reused: bool, head_only: bool
                        ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        reader, writer = conn
        keep = False
        try:
            writer.write(payload)
            async with asyncio.timeout(timeout):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if reused and not exc.partial:
                        raise _Stale("server closed the idle connection") from exc
                    raise httpx.RemoteProtocolError("server disconnected without a complete response",
                                                    request=request) from exc
                except asyncio.LimitOverrunError as exc:
                    raise httpx.RemoteProtocolError("response head too large", request=request) from exc
                status, reason, headers, length, chunked, close = _parse_head(head, request)
                if head_only or status in (204, 304) or 100 <= status < 200:
                    content = b""
                elif chunked:
                    content = await _read_chunked(reader)
                elif length is not None:
                    content = await reader.readexactly(length)
                else:
                    content, close = await reader.read(), True
            keep = not close
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no complete response within {timeout} s", request=request) from exc
        except asyncio.IncompleteReadError as exc:
            raise httpx.RemoteProtocolError("server disconnected mid-response", request=request) from exc
        except (ValueError, asyncio.LimitOverrunError) as exc:  # a chunk size that is not hex, an endless line
            raise httpx.RemoteProtocolError(f"malformed response body: {exc}", request=request) from exc
        except ConnectionError as exc:
            if reused:
                raise _Stale(f"{type(exc).__name__}: {exc}") from exc
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc
        finally:
            # Anything but a complete response (error, timeout, cancellation) leaves the connection
            # in an unknown state: close it rather than pool it.
            if keep and len(self._idle[origin]) < self._max_idle:
                self._idle[origin].append(conn)
            else:
                writer.close()
        return status, reason, headers, content

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()
        await self._fallback.aclose()


def _parse_head(head: bytes, request: httpx.Request | None
                ) -> tuple[int, bytes, list[tuple[bytes, bytes]], int | None, bool, bool]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:100]!r}", request=request)
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise httpx.RemoteProtocolError(f"malformed header line {line[:100]!r}", request=request)
        value = value.strip()
        headers.append((name, value))
        lname = name.strip().lower()
        if lname == b"content-length":
            if not value.isdigit():
                raise httpx.RemoteProtocolError(f"bad content-length {value[:40]!r}", request=request)
            length = int(value)
        elif lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lname == b"connection":
            close = b"close" in value.lower()
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            trailer = await reader.readuntil(b"\r\n")
            while trailer != b"\r\n":  # trailer fields end with an empty line
                trailer = await reader.readuntil(b"\r\n")
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
