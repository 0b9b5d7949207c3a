"""Suite-wide: ``@pytest.mark.gpu`` tests skip where CUDA is absent (torch is imported only when
such a test was collected)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    try:
        import torch

        reason = None if torch.cuda.is_available() else "needs CUDA: torch.cuda.is_available() is False"
    except ImportError as exc:
        reason = f"needs CUDA: torch cannot be imported ({exc})"
    if reason is not None:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))
