"""Shared fixtures: the repo's artifact cache (same as `make run`), encoded test images, apps."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
