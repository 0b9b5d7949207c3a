"""PodTransport against real sockets: reuse, stale connections, errors as httpx's own types, header
injection refused, and the hasher client's calls through its byte-level request method."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from router.pod_transport import PodTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict[str, object]], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return lines[0], headers, body


def _response(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
            + extra + b"\r\n" + body)


class Server:
    """A raw asyncio HTTP server on 127.0.0.1 whose behaviour each test scripts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.state: dict[str, object] = {}

    async def __aenter__(self) -> Server:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer, self.state)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the client went away: the handler's loop ends with it
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, object]) -> None:
    while True:
        line, headers, body = await _read_request(reader)
        out = json.dumps({"line": line.decode(), "body": body.decode(), "host": headers[b"host"].decode(),
                          "trace": headers.get(b"traceparent", b"").decode()}).encode()
        writer.write(_response(out, extra=b"x-pod: a\r\n"))
        await writer.drain()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=PodTransport(), timeout=httpx.Timeout(2.0, connect=1.0)) as c:
        yield c


async def test_requests_reuse_one_connection_and_round_trip_intact(client: httpx.AsyncClient) -> None:
    async with Server(echo_forever) as srv:
        for i in range(5):
            r = await client.post(f"{srv.url}/v1/hash?x=1", json={"images": [f"img{i}"]}, headers={"traceparent": "t"})
            assert r.status_code == 200 and r.headers["x-pod"] == "a"
            got = r.json()
            assert got["line"] == "POST /v1/hash?x=1 HTTP/1.1"
            assert json.loads(got["body"]) == {"images": [f"img{i}"]} and got["trace"] == "t"
            assert got["host"] == srv.url.removeprefix("http://")
        assert srv.connections == 1


async def test_concurrent_requests_open_parallel_connections_then_reuse_them(client: httpx.AsyncClient) -> None:
    async with Server(echo_forever) as srv:
        for _ in range(3):
            rs = await asyncio.gather(*(client.post(f"{srv.url}/v1/hash", json={"i": i}) for i in range(8)))
            assert [json.loads(r.json()["body"])["i"] for r in rs] == list(range(8))
        assert srv.connections <= 8


async def test_a_connection_the_server_closed_while_idle_is_replaced_transparently(
        client: httpx.AsyncClient) -> None:
    async def one_then_close(reader, writer, state) -> None:  # noqa: ANN001 - keep-alive timeout of 0
        await _read_request(reader)
        writer.write(_response(b"{}"))
        await writer.drain()

    async with Server(one_then_close) as srv:
        for _ in range(4):
            assert (await client.get(f"{srv.url}/v2/health/ready")).status_code == 200
            await asyncio.sleep(0.01)
        assert srv.connections == 4


async def test_connect_refused_and_timeouts_are_httpx_errors(client: httpx.AsyncClient) -> None:
    async with Server(echo_forever) as srv:
        url = srv.url
    with pytest.raises(httpx.ConnectError):
        await client.get(f"{url}/x")  # nothing listens there any more

    async def hang(reader, writer, state) -> None:  # noqa: ANN001
        await _read_request(reader)
        await asyncio.sleep(5)

    async with Server(hang) as srv:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{srv.url}/slow", timeout=0.2)


async def test_a_timed_out_or_cancelled_connection_is_never_reused(client: httpx.AsyncClient) -> None:
    async def slow_first(reader, writer, state) -> None:  # noqa: ANN001
        while True:
            await _read_request(reader)
            state["n"] = int(state.get("n", 0)) + 1  # type: ignore[call-overload]
            if state["n"] == 1:
                await asyncio.sleep(0.5)  # the answer arrives after the client gave up
            writer.write(_response(json.dumps({"n": state["n"]}).encode()))
            await writer.drain()

    async with Server(slow_first) as srv:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{srv.url}/a", timeout=0.1)
        await asyncio.sleep(0.6)
        # A reused connection would deliver the late answer to the first request ({"n": 1}).
        assert (await client.get(f"{srv.url}/b")).json() == {"n": 2}
        task = asyncio.create_task(client.get(f"{srv.url}/c"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await client.get(f"{srv.url}/d")).json()["n"] >= 3


async def test_chunked_and_connection_close_responses(client: httpx.AsyncClient) -> None:
    async def chunked_then_close(reader, writer, state) -> None:  # noqa: ANN001
        await _read_request(reader)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\nretry-after: 1\r\n\r\n"
                     b"5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n")
        await _read_request(reader)
        writer.write(_response(b'{"b": 2}', extra=b"connection: close\r\n"))
        await writer.drain()

    async with Server(chunked_then_close) as srv:
        r = await client.get(f"{srv.url}/x")
        assert (r.status_code, r.json(), r.headers["retry-after"]) == (503, {"a": 1}, "1")
        r = await client.get(f"{srv.url}/y")
        assert r.json() == {"b": 2}
        assert (await client.get(f"{srv.url}/z")).status_code == 503  # a new connection: the script restarts
        assert srv.connections == 2


async def test_a_response_cut_short_is_a_protocol_error(client: httpx.AsyncClient) -> None:
    async def cut(reader, writer, state) -> None:  # noqa: ANN001
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")
        await writer.drain()

    async with Server(cut) as srv:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{srv.url}/x")


ENGINE = {"model": "face", "version": "2", "backend": "openvino", "precision": "int8", "fallback_from": []}


async def test_hasher_client_writes_and_reads_hash_calls_through_the_transport() -> None:
    """HasherClient(PodTransport) skips httpx's models: the pod's request schema on the wire, same results,
    and the same pool as the httpx client over that transport."""
    from trt_serving.client import HasherClient, HasherRejected, HasherUnavailable
    from trt_serving.schemas import HashRequest

    async def pod(reader, writer, state) -> None:  # noqa: ANN001 - answers by the request's first image
        while True:
            line, headers, body = await _read_request(reader)
            state["seen"] = (line, headers, body)
            first = base64.b64decode(json.loads(body)["images"][0])
            if first == b"bad":
                writer.write(_response(b'{"error": {"code": "bad_image", "message": "not an image"}}',
                                       "400 Bad Request"))
            elif first == b"busy":
                writer.write(_response(b'{"error": {"code": "queue_full", "message": "full"}}',
                                       "503 Service Unavailable", b"Retry-After: 2\r\n"))
            else:
                writer.write(_response(json.dumps({"engine": ENGINE, "codes": ["ab" * 16] * 2}).encode()))
            await writer.drain()

    transport = PodTransport()
    b64 = [base64.b64encode(b"\x01").decode(), base64.b64encode(b"\x02").decode()]
    async with httpx.AsyncClient(transport=transport) as http, Server(pod) as srv:
        hasher = HasherClient(transport)
        res = await hasher.hash(srv.url + "/", b64, timeout_s=2, headers={"traceparent": "00-t"})
        assert res.codes == ["ab" * 16] * 2 and res.engine.precision == "int8"
        line, headers, body = srv.state["seen"]  # type: ignore[misc]
        assert line == b"POST /v1/hash HTTP/1.1" and headers[b"traceparent"] == b"00-t"
        assert headers[b"host"] == srv.url.removeprefix("http://").encode()
        assert headers[b"content-type"] == b"application/json"
        sent = HashRequest.model_validate_json(body)  # the pod's schema (extra fields forbidden)
        assert sent.images == b64  # the text as received: no decode, no re-encode
        with pytest.raises(HasherRejected) as rejected:
            await hasher.hash(srv.url, [base64.b64encode(b"bad").decode()], timeout_s=2)
        assert (rejected.value.status, rejected.value.code, str(rejected.value)) == (400, "bad_image", "not an image")
        with pytest.raises(HasherUnavailable) as busy:
            await hasher.hash(srv.url, [base64.b64encode(b"busy").decode()], timeout_s=2)
        assert (busy.value.status, busy.value.code, busy.value.retry_after_s) == (503, "queue_full", 2.0)
        with pytest.raises(ValueError, match="CR, LF"):
            await hasher.hash(srv.url, b64, timeout_s=2, headers={"x-evil": "a\r\nx-injected: 1"})
        with pytest.raises(ValueError, match="CR or LF"):
            await http.post(srv.url, content=b"{}", headers={"x-evil": "a\nx-injected: 1"})
        assert (await http.post(srv.url + "/v1/hash", json={"images": b64})).json()["codes"] == res.codes
        assert srv.connections == 1  # every call, errors and the httpx client's included, reused one connection
        url = srv.url
    with pytest.raises(HasherUnavailable, match="unreachable: ConnectError"):
        await hasher.hash(url, b64, timeout_s=1)
    assert await hasher.ready(url, timeout_s=1) is False
