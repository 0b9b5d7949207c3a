"""bench/bench_tracing.py's mode selection: an A/B of a router setting runs interleaved, in one run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench_tracing() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the script imports bench/rawhttp.py as a sibling
    try:
        spec = importlib.util.spec_from_file_location("bench_tracing_under_test", BENCH / "bench_tracing.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_each_mode_is_followed_by_its_variant_with_the_variable_on_the_router(bench_tracing: ModuleType) -> None:
    sink = SimpleNamespace(endpoint="http://127.0.0.1:4318")
    modes = bench_tracing.selected_modes(sink, ["off", "ratio=1.0"], {"SERVESTACK_ROUTER_GC_FREEZE": "false"})
    assert [m.name for m in modes] == ["off", "off [SERVESTACK_ROUTER_GC_FREEZE=false]",
                                       "ratio=1.0", "ratio=1.0 [SERVESTACK_ROUTER_GC_FREEZE=false]"]
    assert modes[1].env == {"OTEL_SDK_DISABLED": "true", "SERVESTACK_ROUTER_GC_FREEZE": "false"}
    assert modes[3].env["OTEL_TRACES_SAMPLER_ARG"] == "1.0" and modes[2].env.get("SERVESTACK_ROUTER_GC_FREEZE") is None
    # No selection, no variant: the four modes of the published table, in its order.
    assert [m.name for m in bench_tracing.selected_modes(sink, [], {})] == [
        "off", "ratio=1.0", "ratio=1.0, stock SDK", "ratio=0.1"]
    with pytest.raises(SystemExit, match="unknown mode"):
        bench_tracing.selected_modes(sink, ["off", "ratio=2"], {})


def test_with_a_baseline_each_mode_is_followed_by_the_same_mode_on_the_baseline_tree(
        bench_tracing: ModuleType, tmp_path: Path) -> None:
    sink = SimpleNamespace(endpoint="http://127.0.0.1:4318")
    modes = bench_tracing.selected_modes(sink, ["off", "ratio=1.0"], {}, tmp_path)
    assert [(m.name, m.src) for m in modes] == [
        ("off", bench_tracing.REPO), ("base: off", tmp_path),
        ("ratio=1.0", bench_tracing.REPO), ("base: ratio=1.0", tmp_path)]
    assert modes[3].env == modes[2].env  # the same variables on both trees
    with_variant = bench_tracing.selected_modes(sink, ["off"], {"X": "1"}, tmp_path)
    assert [m.name for m in with_variant] == ["off", "base: off", "off [X=1]", "base: off [X=1]"]
