"""Audit ids: 32 hex digits, unique across buffer refills and threads."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from router.ids import new_id


def test_ids_are_hex_and_unique_across_refills_and_threads() -> None:
    with ThreadPoolExecutor(4) as pool:
        ids = [i for batch in pool.map(lambda _: [new_id() for _ in range(1000)], range(4)) for i in batch]
    assert len(ids) == 4000 == len(set(ids))  # 4000 ids span ~16 refills of the 256-id buffer
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    # Uniform bits: each hex digit position takes many values (a stuck buffer would not).
    assert all(len({i[k] for i in ids}) == 16 for k in range(32))
