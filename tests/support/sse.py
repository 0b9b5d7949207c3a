"""Server-sent events as the explainer and the router write them: ``event: NAME\ndata: JSON`` blocks."""

from __future__ import annotations

import json


def sse_events(raw: str) -> list[tuple[str, dict]]:
    """``raw`` (a whole SSE body) -> [(event name, decoded data)] in order."""
    out = []
    for block in (b for b in raw.split("\n\n") if b):
        head, data = block.split("\n", 1)
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out
