"""Schemathesis against the router on 127.0.0.1 (client key): every operation behaves as /openapi.json says.

The router runs in process with its lifespan, production transport and SQLite audit store, in
front of the fake pods of tests/router/support/fakes.py (real sockets; they hash any bytes, so every
schema-valid image is served). Every phase, stateful included (enrol -> verify -> audit record,
explanation through the response links), every check; zero failures. Bounded: 6 cases per
operation. The admin operations answer the client key's 403, as documented.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvicorn

from tests.openapi_fuzz import assert_clean, fuzz
from tests.router.support.fakes import AUTH, running_router
from tests.support.procs import free_port

# A multiple of 3: the documented maxLength (padded base64) is then exactly the size limit; small, so
# that the boundary cases of 16 images stay far below the body limit.
MAX_IMAGE_BYTES = 3 * 65536


async def test_router_matches_its_openapi_schema(tmp_path: Path) -> None:
    async with running_router(tmp_path, max_image_bytes=MAX_IMAGE_BYTES) as harness:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(harness.app, host="127.0.0.1", port=port, lifespan="off",
                                               log_level="warning", access_log=False))
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                assert not serving.done(), "the router did not start"
                await asyncio.sleep(0.05)
            # The CLI runs in a thread: this loop keeps serving the router and the fake pods meanwhile.
            run = await asyncio.to_thread(fuzz, f"http://127.0.0.1:{port}", tmp_path / "st", headers=AUTH,
                                          max_examples=6)
        finally:
            server.should_exit = True
            await serving
    schema = harness.app.openapi()
    assert_clean(run, operations=sum(len(ops) for ops in schema["paths"].values()), stateful=True)
    assert schema["paths"]["/v1/verify"]["post"]["responses"]["200"]["links"]
