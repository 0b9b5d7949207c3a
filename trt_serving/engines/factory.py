"""Pick a backend module by name, importing it (and its libraries) only when asked.

Each backend module (``engines/<backend>.py``) provides ``PRECISIONS``, ``build(ctx)`` and
``load(artifact_dir, precision, threads)``. GPU libraries are imported lazily inside those
modules, so naming ``tensorrt`` on a CPU host fails with :class:`EngineUnavailable` (saying why),
never with an ImportError at start-up.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from trt_serving.engines.base import BACKENDS, PRECISIONS, EngineUnavailable


def backend_module(backend: str) -> ModuleType:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(f"trt_serving.engines.{backend}")
    except ImportError as exc:  # a missing optional library: say which, do not hide it
        raise EngineUnavailable(f"backend {backend} cannot be imported: {exc}") from exc


def supported_precisions(backend: str) -> tuple[str, ...]:
    return tuple(backend_module(backend).PRECISIONS)


def check_precision(backend: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    supported = supported_precisions(backend)
    if precision not in supported:
        raise EngineUnavailable(f"backend {backend} does not run {precision} (it runs {', '.join(supported)})")
