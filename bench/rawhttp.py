"""A minimal keep-alive HTTP/1.1 client for load generation (requests prebuilt as bytes).

httpx tops out near 400 requests/s on one core here, below the servers under test, and its CPU
use competes with them on a 2-core machine: it would measure itself. One ``RawConnection`` per
concurrent user writes prebuilt request bytes and reads the answer by Content-Length.
"""

from __future__ import annotations

import asyncio


def post(host: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A POST request with a JSON body, as bytes ready to send."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class RawConnection:
    """One keep-alive connection; ``request`` sends bytes and returns (status, headers, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> RawConnection:
        return cls(*await asyncio.open_connection(host, port))

    async def request(self, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = {k.lower(): v for k, _, v in (ln.partition(b": ") for ln in head[:-4].split(b"\r\n")[1:])}
        body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        return status, headers, body

    def close(self) -> None:
        self.writer.close()
