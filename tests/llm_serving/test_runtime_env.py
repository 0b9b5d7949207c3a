"""The explainer's recommended process environment."""

from __future__ import annotations

import pytest

from llm_serving.runtime_env import find_iomp, find_tcmalloc, missing_from, recommended_env


def test_binding_and_offline_flags() -> None:
    env = recommended_env(2, base={})
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert recommended_env(1, base={})["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    with pytest.raises(ValueError):
        recommended_env(0)


def test_preload_only_what_exists_and_keeps_existing() -> None:
    env = recommended_env(2, base={"LD_PRELOAD": "/opt/other.so"})
    expected = ["/opt/other.so"] + [p for p in (find_tcmalloc(), find_iomp()) if p]
    assert env["LD_PRELOAD"].split(":") == expected


def test_missing_from() -> None:
    assert missing_from({"A": "1", "B": "2"}, {"A": "1", "B": "3", "C": "4"}) == {"B": "3", "C": "4"}
