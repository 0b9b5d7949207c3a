"""Engine artifacts: build, verify (bit agreement with fp32), describe (manifest), load.

Cache layout (``cache_dir``, default ``.servestack/cache``)::

    hasher/<model>-v<version>/weights[-<ckpt sha12>]/    weights.pt, model_card.json, reference.npz
    hasher/<model>-v<version>/engines/<backend>-<precision>[-<ckpt sha12>]/   manifest.json + engine files
    hasher/<model>-v<version>/.lock                      fcntl lock: builds are idempotent and serialised

Builds write into a temporary sibling directory and rename it into place, so a reader never sees
half an artifact; a manifest is the last file written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trt_serving.engines.base import BuildContext, Engine, EngineUnavailable
from trt_serving.engines.factory import backend_module, check_precision
from trt_serving.locking import file_lock
from trt_serving.model.hasher import ModelCard, bit_agreement

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DEFAULT_FLOOR = 0.97
HELDOUT_IMAGES = 64
CALIB_IMAGES = 64
HELDOUT_SEED_OFFSET = 1_000_003  # held-out images never overlap the calibration/fit sets


class AgreementTooLow(RuntimeError):
    """The built engine's codes agree with fp32 below the floor: refused unless forced."""


@dataclass(frozen=True)
class BuildRequest:
    model: str
    version: str
    backend: str
    precision: str
    cache_dir: Path
    out_dir: Path | None = None  # default: under the cache
    weights: Path | None = None  # user checkpoint; seeded weights when None
    calib_dir: Path | None = None  # directory of images for INT8 calibration; generated when None
    calib_images: int = CALIB_IMAGES
    floor: float = DEFAULT_FLOOR
    force: bool = False
    threads: int = 2
    rebuild: bool = False


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_dir(cache_dir: Path, model: str, version: str) -> Path:
    return cache_dir / "hasher" / f"{model}-v{version}"


def _suffix(weights: Path | None) -> str:
    return "" if weights is None else "-" + sha256_file(weights)[:12]


def weights_dir(cache_dir: Path, model: str, version: str, weights: Path | None = None) -> Path:
    return model_dir(cache_dir, model, version) / f"weights{_suffix(weights)}"


def artifact_dir(req: BuildRequest) -> Path:
    if req.out_dir is not None:
        return req.out_dir
    return (model_dir(req.cache_dir, req.model, req.version) / "engines"
            / f"{req.backend}-{req.precision}{_suffix(req.weights)}")


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / MANIFEST).read_text())


def _reference(wdir: Path, card: ModelCard, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out inputs and their torch fp32 codes (the reference), cached beside the weights."""
    from trt_serving.engines.torch import load as load_torch
    from trt_serving.model.synthetic import generated_inputs
    from trt_serving.model.weights import seed_for

    inputs = generated_inputs(HELDOUT_IMAGES, seed_for(card.modality, card.version) + HELDOUT_SEED_OFFSET,
                              card.preprocessing)
    ref_path = wdir / "reference.npz"
    if ref_path.exists():
        return inputs, np.load(ref_path)["codes"]
    engine = load_torch(wdir, "fp32", threads)
    codes = np.concatenate([engine.infer(inputs[i:i + 16]) for i in range(0, len(inputs), 16)])
    np.savez(ref_path, codes=codes)
    return inputs, codes


def ensure_weights(cache_dir: Path, model: str, version: str, weights: Path | None = None) -> Path:
    """Seeded conditioned weights (or the user's checkpoint) saved once under the cache."""
    from trt_serving.model import weights as weights_io

    wdir = weights_dir(cache_dir, model, version, weights)
    if (wdir / "model_card.json").exists():
        return wdir
    with file_lock(model_dir(cache_dir, model, version) / ".lock"):
        if (wdir / "model_card.json").exists():
            return wdir
        started = time.monotonic()
        net, card = weights_io.build_default(model, version, checkpoint=weights)
        tmp = wdir.with_name(f"{wdir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        weights_io.save(net, card, tmp)
        tmp.rename(wdir)
        log.info("weights ready", extra={"model": model, "version": version,
                                         "seconds": round(time.monotonic() - started, 1)})
    return wdir


def _calibration(req: BuildRequest, card: ModelCard) -> tuple[np.ndarray, dict[str, Any]]:
    from trt_serving.model.synthetic import generated_inputs
    from trt_serving.model.weights import seed_for
    from trt_serving.preprocess import load_directory

    if req.calib_dir is not None:
        inputs, names = load_directory(req.calib_dir, card.preprocessing, limit=req.calib_images)
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
        return inputs, {"source": "directory", "path": str(req.calib_dir.resolve()), "images": len(names),
                        "names_sha256": digest}
    seed = seed_for(card.modality, card.version) + 7
    inputs = generated_inputs(req.calib_images, seed, card.preprocessing)
    kind = "fingerprint-like ridge patterns" if card.preprocessing.color == "L" else "face-like colour scenes"
    return inputs, {"source": "generated", "seed": seed, "images": req.calib_images,
                    "description": f"{kind}: varied colour, contrast, brightness and texture scale "
                                   "(trt_serving.model.synthetic)"}


def build_artifact(req: BuildRequest) -> Path:
    """Build (or reuse) the artifact for ``req``; returns its directory.

    Raises:
        AgreementTooLow: bit agreement under ``req.floor`` and not ``req.force``.
        EngineUnavailable: the backend cannot build here.
    """
    check_precision(req.backend, req.precision)
    target = artifact_dir(req)
    if (target / MANIFEST).exists() and not req.rebuild:
        return target
    wdir = ensure_weights(req.cache_dir, req.model, req.version, req.weights)
    with file_lock(model_dir(req.cache_dir, req.model, req.version) / ".lock"):
        if (target / MANIFEST).exists() and not req.rebuild:
            return target
        return _build_locked(req, wdir, target)


def _build_locked(req: BuildRequest, wdir: Path, target: Path) -> Path:
    card = ModelCard.from_json((wdir / "model_card.json").read_text())
    module = backend_module(req.backend)
    started = time.monotonic()
    calib, calib_desc = _calibration(req, card) if req.precision == "int8" else (
        np.zeros((0, 3, card.preprocessing.input_size, card.preprocessing.input_size), np.float32),
        {"source": "none", "description": "not calibrated: only int8 builds use a calibration set"})
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files = module.build(BuildContext(weights_dir=wdir, out_dir=tmp, precision=req.precision,
                                          calib_inputs=calib, input_size=card.preprocessing.input_size,
                                          threads=req.threads))
        shutil.copyfile(wdir / "model_card.json", tmp / "model_card.json")
        files = sorted(set(files) | {"model_card.json"})
        engine = module.load(tmp, req.precision, req.threads)
        heldout, ref_codes = _reference(wdir, card, req.threads)
        codes = np.concatenate([engine.infer(heldout[i:i + 16]) for i in range(0, len(heldout), 16)])
        engine.close()
        agreement = bit_agreement(codes, ref_codes)
        if agreement < req.floor and not req.force:
            raise AgreementTooLow(
                f"{req.backend}/{req.precision} codes agree with fp32 on {agreement:.4f} of bits, under the "
                f"floor {req.floor}; use --force to keep it anyway, or calibrate on representative images")
        manifest = {
            "format": 1, "model": req.model, "version": req.version, "backend": req.backend,
            "precision": req.precision, "arch": card.arch,
            "input_shape": [-1, 3, card.preprocessing.input_size, card.preprocessing.input_size],
            "outputs": {"codes": [-1, 16], "features": [-1, 512]},
            "files": {name: sha256_file(tmp / name) for name in files},
            "weights": {"source": card.weights, "sha256": sha256_file(wdir / "weights.pt")},
            "calibration": calib_desc,
            "bit_agreement": {"value": round(agreement, 6), "reference": "torch-fp32",
                              "heldout_images": len(heldout), "heldout": "generated, seed disjoint from calibration",
                              "floor": req.floor, "forced": bool(req.force and agreement < req.floor)},
            "build_seconds": round(time.monotonic() - started, 1),
            "host": {"machine": platform.machine(), "python": platform.python_version()},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("artifact built", extra={"backend": req.backend, "precision": req.precision,
                                      "agreement": round(agreement, 4), "dir": str(target)})
    return target


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Refuse an artifact whose files do not match the manifest's sha256s."""
    for name, digest in manifest["files"].items():
        path = directory / name
        if not path.exists() or sha256_file(path) != digest:
            raise EngineUnavailable(f"artifact {directory}: {name} is missing or does not match its sha256")


def load_artifact(directory: Path, threads: int, *, verify: bool = True) -> tuple[Engine, dict[str, Any]]:
    manifest = read_manifest(directory)
    if verify:
        verify_files(directory, manifest)
    engine = backend_module(manifest["backend"]).load(directory, manifest["precision"], threads)
    return engine, manifest
