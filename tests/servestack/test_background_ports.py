"""Background stacks get ports no outgoing connection can be holding."""

from __future__ import annotations

import socket

import pytest

from servestack.background import free_port_offset, offset_candidates
from servestack.up_cmd import DEFAULT_PORTS


@pytest.mark.parametrize("ephemeral", [(32768, 60999), (1024, 60000), (40000, 65535), (49152, 65535)])
def test_every_candidate_keeps_the_stack_outside_the_ephemeral_range(ephemeral: tuple[int, int]) -> None:
    candidates = offset_candidates(ephemeral)
    assert len(candidates) > 100
    for offset in candidates:
        ports = [port + offset for port in DEFAULT_PORTS.values()]
        assert all(1024 <= port <= 65535 for port in ports)
        assert not any(ephemeral[0] <= port <= ephemeral[1] for port in ports), (offset, ports)


def test_the_chosen_offset_skips_a_port_that_is_taken() -> None:
    offset = free_port_offset()
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", DEFAULT_PORTS["router"] + offset))
        taken.listen()
        for _ in range(20):
            assert free_port_offset() != offset
    finally:
        taken.close()
