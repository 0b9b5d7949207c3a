"""Incremental extraction of the prose field from streamed JSON."""

from __future__ import annotations

import json

import pytest

from llm_serving.stream_json import FieldStreamer

RAW = json.dumps({"decision": "accept", "explanation": 'A "quoted"\nline \u00e9 \\ end', "numbers_cited": [12]})


@pytest.mark.parametrize("step", [1, 2, 3, 5, len(RAW)])
def test_any_split_yields_the_decoded_field(step: int) -> None:
    streamer = FieldStreamer("explanation")
    pieces = [streamer.feed(RAW[i:i + step]) for i in range(0, len(RAW), step)]
    assert "".join(pieces) == json.loads(RAW)["explanation"]
    assert streamer.done
    if step == 1:
        assert sum(1 for p in pieces if p) > 10  # incremental, not all at the end


def test_nothing_before_the_field_starts() -> None:
    streamer = FieldStreamer("explanation")
    assert streamer.feed('{"decision":"reject","expl') == ""
    assert streamer.feed('anation":"Rej') == "Rej"
    assert not streamer.done
