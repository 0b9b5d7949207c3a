"""The pod's request deadline (X-Request-Timeout-Ms) and dropping the work of a client that hung up."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.trt_serving.test_batcher import FakeEngine, make, rows, started
from trt_serving.deadlines import ClientGone, deadline_from, until_disconnect
from trt_serving.errors import InvalidInput


def test_header_shortens_the_default_and_never_lengthens_it() -> None:
    now = time.monotonic()
    assert deadline_from({}, 10.0) - now == pytest.approx(10.0, abs=0.05)
    assert deadline_from({"x-request-timeout-ms": "250"}, 10.0) - now == pytest.approx(0.25, abs=0.05)
    assert deadline_from({"x-request-timeout-ms": "60000"}, 10.0) - now == pytest.approx(10.0, abs=0.05)
    assert deadline_from({"x-request-timeout-ms": "0"}, 10.0) <= time.monotonic()


@pytest.mark.parametrize("raw", ["soon", "1.5", "-3", ""])
def test_bad_header_is_a_400(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        deadline_from({"x-request-timeout-ms": raw}, 10.0)
    assert info.value.status == 400 and info.value.code == "invalid_timeout"


class Connection:
    """An ASGI ``receive`` whose body was read already: it answers only when the client hangs up."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_work_finishing_first_is_returned() -> None:
    conn = Connection()

    async def work() -> int:
        return 7

    assert await until_disconnect(conn.receive, work()) == 7


async def test_client_gone_drops_its_request_from_the_batch() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    engine = FakeEngine(block=True)
    b = make(engine, pool, max_batch_size=4, max_queue_delay_us=0)
    try:
        running = asyncio.create_task(b.submit(rows(1), timeout_s=5))
        await started(engine)
        conn = Connection()
        abandoned = asyncio.create_task(until_disconnect(conn.receive, b.submit(rows(2), timeout_s=5)))
        kept = asyncio.create_task(b.submit(rows(3), timeout_s=5))
        await asyncio.sleep(0.01)
        conn.gone.set()
        with pytest.raises(ClientGone):
            await abandoned
        engine.release.set()
        await running
        assert (await kept).logits[0, 0] == 3.0
        assert engine.batches == [[1.0], [3.0]]  # the abandoned request never ran
    finally:
        engine.release.set()
        await b.stop()
        pool.shutdown(wait=True)
