"""Fixtures of the k8s tests: rendered overlays and each component's real HTTP routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.k8s.manifests import get, render


@pytest.fixture(scope="session", params=["cpu", "gpu"])
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def objs(overlay: str) -> tuple[dict, ...]:
    return render(overlay)


def _paths(app) -> set[str]:
    """Every path in a FastAPI/Starlette route table (mounted sub-apps included)."""
    paths: set[str] = set()
    for route in app.routes:
        path = getattr(route, "path", None)
        if path is None:
            continue
        sub = getattr(route, "app", None)
        if sub is not None and hasattr(sub, "routes") and route.__class__.__name__ == "Mount":
            paths |= {path.rstrip("/") + p for p in _paths(sub)}
        else:
            paths.add(path)
    return paths


class _IdleGenerator:
    """Stands in for vLLM: the explainer's route table is built without an engine."""

    model = "stub"
    backend = "stub"

    def is_ready(self) -> bool:
        return False

    async def start(self) -> None:  # never called: the lifespan does not run here
        raise AssertionError("the lifespan must not run in route extraction")

    async def close(self) -> None:
        return None

    async def generate(self, request) -> AsyncIterator:  # pragma: no cover - never called
        raise AssertionError("no generation in route extraction")
        yield


@pytest.fixture(scope="session")
def component_routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Paths each component's app serves, read from the apps' route tables (lifespans not run).

    The router is built from the rendered policy ConfigMap itself (its factory parses the file),
    so this also proves the router accepts the policy the manifests ship.
    """
    tmp = tmp_path_factory.mktemp("routes")
    policy = tmp / "policy.yaml"
    policy.write_text(get(render("cpu"), "ConfigMap", "router-policy")["data"]["policy.yaml"])

    from router.app import create_app as router_app
    from router.config import RouterSettings

    router = router_app(RouterSettings(policy_path=policy, auth_disabled=True, gc_freeze=False, gc_gen0_threshold=0,
                                       audit_url=f"sqlite:///{tmp / 'audit.db'}"))

    from trt_serving.app import create_app as hasher_app
    from trt_serving.config import HasherSettings

    hasher = hasher_app(HasherSettings(model="face", version="1", cache_dir=Path(tmp / "cache")))

    from llm_serving.app import create_app as explainer_app
    from llm_serving.config import ExplainerSettings

    explainer = explainer_app(ExplainerSettings(cache_dir=tmp / "cache"), generator=_IdleGenerator(),
                              include_global_metrics=False)
    return {"router": _paths(router), "hasher": _paths(hasher), "explainer": _paths(explainer)}


@pytest.fixture(scope="session")
def interfaces_text() -> str:
    return (Path(__file__).resolve().parents[2] / "docs" / "INTERFACES.md").read_text()
