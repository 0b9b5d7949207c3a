"""Shared fixtures: the repo's artifact cache (same as `make run`), encoded test images, apps."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.procs import free_port, process

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".servestack" / "cache"


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(buf, fmt)
    return buf.getvalue()


def sample_images(n: int, seed: int = 0, size: tuple[int, int] = (180, 150)) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 255, size=(size[0] // 10, size[1] // 10, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((size[1], size[0]), Image.Resampling.BICUBIC))
        out.append(encode(img))
    return out


def wait_ready(client, timeout_s: float = 300.0) -> None:  # noqa: ANN001 - TestClient or httpx.Client
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get("/v2/health/ready")
        if response.status_code == 200:
            return
        live = client.get("/v2/health/live")
        assert live.status_code == 200, live.text
        time.sleep(0.1)
    raise AssertionError("hasher did not become ready")


class Helpers:
    """Test helpers as a fixture (``--import-mode=importlib`` cannot import conftest by name)."""

    encode = staticmethod(encode)
    sample_images = staticmethod(sample_images)
    wait_ready = staticmethod(wait_ready)


@pytest.fixture(scope="session")
def helpers() -> type[Helpers]:
    return Helpers


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CACHE_DIR


@pytest.fixture(scope="session")
def fingerprint_pod(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(HTTP base URL, gRPC host:port) of one real fingerprint pod process (`python -m trt_serving`)."""
    port, grpc_port = free_port(), free_port()
    env = {"SERVESTACK_HASHER_MODEL": "fingerprint", "SERVESTACK_HASHER_VERSION": "1",
           "SERVESTACK_HASHER_PORT": str(port), "SERVESTACK_HASHER_GRPC_PORT": str(grpc_port),
           "SERVESTACK_HASHER_CACHE_DIR": str(cache_dir), "SERVESTACK_HASHER_THREADS": "1", "OMP_NUM_THREADS": "1",
           # Small enough that the fuzzer's boundary cases (maxLength of each image) stay cheap.
           "SERVESTACK_HASHER_MAX_IMAGE_BYTES": "262144",
           "OTEL_SDK_DISABLED": "true"}
    url = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-m", "trt_serving"], f"{url}/v2/health/ready",
                 tmp_path_factory.mktemp("pod") / "pod.log", env=env, timeout_s=300, stop_timeout_s=20):
        yield url, f"127.0.0.1:{grpc_port}"
