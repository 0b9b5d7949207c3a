"""Conversion of the default GGUF model into a Hugging Face directory (cached, idempotent)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from llm_serving.prepare import DONE_MARKER, PrepareError, find_default_gguf, is_prepared, prepare_default_model

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("SERVESTACK_TEST_CACHE_DIR", REPO / ".servestack" / "cache"))


def test_gguf_is_found_without_importing_the_package() -> None:
    path = find_default_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    with pytest.raises(PrepareError, match="not installed"):
        find_default_gguf(package="no_such_package_servestack")


@pytest.mark.slow
def test_prepare_is_idempotent_and_serialisable() -> None:
    first = prepare_default_model(CACHE_DIR)  # converts (~20 s) only when the cache lacks it
    started = time.perf_counter()
    again = prepare_default_model(CACHE_DIR)
    assert again == first and time.perf_counter() - started < 1.0
    assert is_prepared(first) and (first / DONE_MARKER).is_file()
    config = json.loads((first / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (first / "model.safetensors").stat().st_size > 100_000_000
