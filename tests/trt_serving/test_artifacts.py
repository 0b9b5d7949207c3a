"""Artifacts: manifest contents, sha256 verification, the agreement floor, idempotent locked builds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trt_serving.artifacts import (
    AgreementTooLow,
    BuildRequest,
    build_artifact,
    load_artifact,
    read_manifest,
    sha256_file,
)
from trt_serving.engines.base import EngineUnavailable

pytestmark = pytest.mark.slow


def req(cache_dir: Path, backend: str, precision: str, **kw) -> BuildRequest:  # noqa: ANN003
    return BuildRequest(model="fingerprint", version="1", backend=backend, precision=precision,
                        cache_dir=cache_dir, threads=2, **kw)


def test_manifest_describes_the_artifact(cache_dir: Path) -> None:
    directory = build_artifact(req(cache_dir, "openvino", "int8"))
    m = read_manifest(directory)
    assert (m["model"], m["version"], m["backend"], m["precision"]) == ("fingerprint", "1", "openvino", "int8")
    assert m["input_shape"] == [-1, 3, 224, 224]
    assert set(m["files"]) == {"model.int8.xml", "model.int8.bin", "model_card.json"}
    for name, digest in m["files"].items():
        assert sha256_file(directory / name) == digest
    assert m["calibration"]["source"] == "generated" and m["calibration"]["images"] == 64
    assert m["bit_agreement"]["reference"] == "torch-fp32" and m["bit_agreement"]["heldout_images"] == 64
    assert 0.97 <= m["bit_agreement"]["value"] < 1.0
    assert m["weights"]["source"].startswith("seeded:")


def test_build_is_idempotent(cache_dir: Path) -> None:
    first = build_artifact(req(cache_dir, "onnxruntime", "fp32"))
    stamp = (first / "manifest.json").stat().st_mtime_ns
    assert build_artifact(req(cache_dir, "onnxruntime", "fp32")) == first
    assert (first / "manifest.json").stat().st_mtime_ns == stamp


def test_tampered_artifact_is_refused(cache_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "art"
    shutil.copytree(build_artifact(req(cache_dir, "onnxruntime", "fp32")), copy)
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(EngineUnavailable, match="sha256"):
        load_artifact(copy, threads=1)


def test_floor_refuses_unless_forced(cache_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(AgreementTooLow, match="under the floor 0.9999"):
        build_artifact(req(cache_dir, "torch", "bf16", out_dir=tmp_path / "refused", floor=0.9999))
    assert not (tmp_path / "refused").exists()
    forced = build_artifact(req(cache_dir, "torch", "bf16", out_dir=tmp_path / "forced", floor=0.9999,
                                force=True))
    assert read_manifest(forced)["bit_agreement"]["forced"] is True


def test_user_calibration_directory_is_described(cache_dir: Path, tmp_path: Path, helpers) -> None:  # noqa: ANN001
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, data in enumerate(helpers.sample_images(8, seed=3)):
        (calib / f"{i}.png").write_bytes(data)
    out = build_artifact(req(cache_dir, "onnxruntime", "int8", out_dir=tmp_path / "art", calib_dir=calib,
                             force=True))
    cal = read_manifest(out)["calibration"]
    assert cal["source"] == "directory" and cal["images"] == 8 and len(cal["names_sha256"]) == 64


def test_prepare_is_idempotent_and_prints_the_artifact(cache_dir: Path) -> None:
    argv = [sys.executable, "-m", "trt_serving.prepare", "--cache-dir", str(cache_dir), "--model", "fingerprint",
            "--version", "1", "--threads", "1"]
    outs = [subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600) for _ in range(2)]
    dirs = [Path(o.stdout.strip().splitlines()[-1]) for o in outs]
    assert dirs[0] == dirs[1] and dirs[0].name == "openvino-int8"
    assert json.loads((dirs[0] / "manifest.json").read_text())["precision"] == "int8"


def test_build_command(cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from servestack import build_cmd

    parser = argparse.ArgumentParser()
    build_cmd.register(parser.add_subparsers())
    base = ["build", "--model", "fingerprint", "--version", "1", "--backend", "torch", "--precision", "bf16",
            "--cache-dir", str(cache_dir)]
    args = parser.parse_args([*base, "--out", str(tmp_path / "ok")])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "ok" / "manifest.json").read_text())["backend"] == "torch"
    args = parser.parse_args([*base, "--out", str(tmp_path / "no"), "--floor", "0.9999"])
    assert args.func(args) == 3
    assert "under the floor" in capsys.readouterr().err
