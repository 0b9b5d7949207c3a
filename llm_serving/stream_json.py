"""Pull one string field out of a JSON object while it is still being generated.

Guided decoding streams ``{"decision":"accept","explanation":"The face ...`` token by token; the
SSE client should see the prose as it grows, not the JSON around it. ``FieldStreamer`` is fed the
raw deltas and returns the newly decoded characters of the chosen field (escapes resolved).
"""

from __future__ import annotations

import json
import re

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class FieldStreamer:
    def __init__(self, field: str) -> None:
        self._key = re.compile(r'"' + re.escape(field) + r'"\s*:\s*"')
        self._buffer = ""
        self._pos: int | None = None  # index in the buffer of the next undecoded character
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, delta: str) -> str:
        """Add raw output; return the field's characters decoded since the last call."""
        self._buffer += delta
        if self._done:
            return ""
        if self._pos is None:
            match = self._key.search(self._buffer)
            if match is None:
                return ""
            self._pos = match.end()
        out: list[str] = []
        buf, i = self._buffer, self._pos
        while i < len(buf):
            ch = buf[i]
            if ch == '"':
                self._done = True
                i += 1
                break
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            if i + 1 >= len(buf):
                break  # escape split across deltas: wait for the rest
            kind = buf[i + 1]
            if kind == "u":
                if i + 6 > len(buf):
                    break
                out.append(json.loads(f'"{buf[i:i + 6]}"') if _is_hex(buf[i + 2:i + 6]) else buf[i:i + 6])
                i += 6
                continue
            out.append(_ESCAPES.get(kind, kind))
            i += 2
        self._pos = i
        return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text)
