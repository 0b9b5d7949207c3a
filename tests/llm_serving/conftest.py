"""One real explainer process (vLLM CPU, the default SmolLM2 model) for the whole session.

vLLM takes ~25 s to start on 2 cores, so every real-model test shares this process. It runs
`python -m llm_serving` exactly as `servestack up` does, on a free 127.0.0.1 port, with the
artifact cache shared with `make run` (the model is converted once).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("SERVESTACK_TEST_CACHE_DIR", REPO / ".servestack" / "cache"))
START_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def explainer_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("explainer") / "explainer.log"
    env = {
        **os.environ,
        "SERVESTACK_EXPLAINER_HOST": "127.0.0.1",
        "SERVESTACK_EXPLAINER_PORT": str(port),
        "SERVESTACK_EXPLAINER_CACHE_DIR": str(CACHE_DIR),
        "SERVESTACK_EXPLAINER_THREADS": "2",
        "SERVESTACK_EXPLAINER_REQUEST_TIMEOUT_S": "120",
        "OTEL_SDK_DISABLED": "true",
    }
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "llm_serving"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_ready(f"{url}/readyz", proc, log=log_path, timeout_s=START_TIMEOUT_S, interval_s=0.5)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"explainer did not start: {exc}")
        yield url
    finally:
        proc.terminate()  # uvicorn's graceful shutdown stops the vLLM engine processes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        # The engine's children are in the session we started: none may outlive the tests.
        with contextlib.suppress(ProcessLookupError):  # the group is already gone, as it should be
            os.killpg(proc.pid, signal.SIGKILL)
