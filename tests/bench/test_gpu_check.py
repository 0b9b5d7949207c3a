"""bench/gpu_check.py: its dry run (the same stages on the CPU, tiny batches) produces every table
with values, so the script cannot rot between GPU leases; --apply refuses a dry run's numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_dry_run_writes_every_table_with_values(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out), "--total-s", "420"],
                          cwd=REPO, capture_output=True, text=True, timeout=470)
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-3000:]
    rows = [json.loads(line) for line in (out / "gpu_rows.jsonl").read_text().splitlines()]
    engine = [r for r in rows if r["stage"] == "engine"]
    assert {r["precision"] for r in engine} == {"fp32", "fp16", "bf16"}
    assert all(r["img_s"] > 0 and r["device_img_s"] > 0 and 0.5 <= r["agreement"] <= 1.0 for r in engine), engine
    assert {r["batch"] for r in engine} == {1, 2}
    (served,) = [r for r in rows if r["stage"] == "serve"]
    assert served["img_s"] > 0 and served["errors"] == 0 and served["engine_img_s"] > 0
    tables = (out / "gpu_tables.md").read_text()
    for block in ("gpu-engines", "gpu-served", "gpu-goals", "gpu-check"):
        assert f"<!-- bench:{block} -->" in tables and f"<!-- /bench:{block} -->" in tables
    assert "| fingerprint (resnet18) | eager | fp16 | 2 @32px |" in tables
    assert "| gpu tests | ok |" in tables and "skipped" in tables  # the @gpu tests ran and skipped without CUDA
    assert "Dry run on the CPU" in tables


def test_apply_refuses_a_dry_run_and_replaces_the_blocks(tmp_path: Path) -> None:
    gpu_check = _gpu_check()
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# B\n\n<!-- bench:gpu-engines -->\nnot run yet\n<!-- /bench:gpu-engines -->\n\nkept\n")
    dry = tmp_path / "dry.md"
    dry.write_text("<!-- bench:gpu-engines -->\n| x |\n\n_Dry run on the CPU (...)_\n<!-- /bench:gpu-engines -->\n")
    with pytest.raises(SystemExit, match="dry run"):
        gpu_check.apply(dry, doc)
    real = tmp_path / "real.md"
    real.write_text("<!-- bench:gpu-engines -->\n| 25,000 |\n\n_Device: NVIDIA H200_\n<!-- /bench:gpu-engines -->\n")
    assert gpu_check.apply(real, doc) == 0
    text = doc.read_text()
    assert "| 25,000 |" in text and "not run yet" not in text and "kept" in text


def test_goals_compare_the_best_face_fp16_row_and_concurrency_64() -> None:
    gpu_check = _gpu_check()
    engine = [{"model": "face", "precision": "fp16", "mode": m, "batch": b, "img_s": v}
              for m, b, v in (("graphs", 256, 21_500.0), ("eager", 256, 18_000.0))]
    served = [{"model": "face", "precision": "fp16", "concurrency": 64, "img_s": 9_000.0}]
    lines = gpu_check._goals(engine, served)
    assert "| 21,500 (graphs, batch 256) | yes |" in lines[2]
    assert "| 9,000 (face fp16) | no |" in lines[3]
    assert "not measured" in gpu_check._goals([], [])[2]
