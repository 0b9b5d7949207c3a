"""router.app: start-up (frozen heap, young-collection spacing)."""

from __future__ import annotations

import gc

from tests.router.support.fakes import AUTH, b64, running_router


async def test_start_up_freezes_what_is_alive_and_spaces_young_collections(tmp_path):
    gc.unfreeze()
    threshold = gc.get_threshold()
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    try:
        async with running_router(tmp_path / "off") as router:  # the harness's default: both off
            assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold
            assert router.app.state.started
        async with running_router(tmp_path / "on", gc_freeze=True, gc_gen0_threshold=10_000) as router:
            # The router's start-up objects (FastAPI, pydantic, SQLAlchemy, OTel) are out of reach
            # of later collections, young collections come every 10,000 net allocations; a
            # request still works.
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold() == (10_000, *threshold[1:])
            r = await router.client.post("/v1/hash", json={"modality": "face", "images": [b64(b"x")]}, headers=AUTH)
            assert r.status_code == 200
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
