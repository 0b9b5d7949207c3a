"""One real explainer process (vLLM CPU, the default SmolLM2 model) for the whole session.

vLLM takes ~25 s to start on 2 cores, so every real-model test shares this process. It runs
`python -m llm_serving` exactly as `servestack up` does, on a free 127.0.0.1 port, with the
artifact cache shared with `make run` (the model is converted once).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("SERVESTACK_TEST_CACHE_DIR", REPO / ".servestack" / "cache"))
START_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


@pytest.fixture(scope="session")
def explainer_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
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
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"explainer exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            if _ready(url):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"explainer not ready after {START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
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
