"""Incremental Server-Sent Events parser for streamed explanations.

Chunks from the socket split events (and UTF-8 characters) anywhere; the parser buffers bytes
and yields whole events. Only what the explainer sends is handled: `event:` and `data:` fields
(several data lines join with a newline, per the SSE spec), comments, CRLF or LF line ends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SSEParser:
    """Feed bytes, get complete events."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        self._buffer += chunk
        while (match := _EVENT_END.search(self._buffer)) is not None:
            block, self._buffer = self._buffer[: match.start()], self._buffer[match.end():]
            event = _parse_block(block.decode("utf-8"))
            if event is not None:
                yield event

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished event (non-empty at end of stream means a truncated stream)."""
        return self._buffer


def _parse_block(block: str) -> SSEEvent | None:
    name = "message"
    data: list[str] = []
    for line in block.splitlines():
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    if not data and name == "message":
        return None  # a keep-alive comment block
    return SSEEvent(name, "\n".join(data))
