"""Fetch, here, the wheels the GPU check needs on the lent machine (which reaches no registry).

The lent machine's python3 (3.12, x86-64) has torch, numpy, pillow, httpx, anyio, h11, pyyaml,
scipy, prometheus-client and some pytest, but not the pod's web and settings stack. This downloads
those distributions as wheels into ``.whl/`` (gitignored), at the versions installed in the
interpreter that runs this script (the ones the test suite passes with), and checks the total
stays under the size that may travel with the working tree.

    .venv/bin/python bench/gpu_wheels.py          # -> .whl/*.whl
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

# What ``python -m trt_serving`` (the pod, cuda backend), the batcher and the @gpu tests import
# that the lent machine lacks. Pure Python except pydantic-core (one cp312 manylinux wheel).
NEEDED = ("fastapi", "starlette", "pydantic", "pydantic-core", "pydantic-settings", "python-dotenv",
          "typing-inspection", "annotated-types", "uvicorn", "opentelemetry-api", "opentelemetry-sdk",
          "opentelemetry-semantic-conventions", "typing-extensions",
          # The suite's pytest and plugins: pytest-asyncio needs pytest>=8.4, the image's version is unknown.
          "pytest", "pluggy", "iniconfig", "pytest-asyncio", "pytest-timeout")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
MAX_MIB = 40.0  # of the 64 MiB that travel with the tree; the repository itself needs the rest


def pins(names: tuple[str, ...] = NEEDED) -> list[str]:
    return [f"{name}=={md.version(name)}" for name in names]


def download(dest: Path, specs: list[str]) -> None:
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platform_args, "-d", str(dest), *specs],
                   check=True)


def check(dest: Path) -> float:
    """Total MiB of ``dest``'s wheels; refuses two versions of one distribution and an oversize set."""
    wheels = sorted(dest.glob("*.whl"))
    names = [w.name.split("-")[0].lower().replace("_", "-") for w in wheels]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise SystemExit(f"two versions of {doubles} in {dest}: remove the stale ones (pip install stops on them)")
    total = sum(w.stat().st_size for w in wheels) / 2**20
    if total > MAX_MIB:
        raise SystemExit(f"{dest} holds {total:.1f} MiB of wheels, over {MAX_MIB} MiB")
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, default=Path(".whl"))
    args = p.parse_args(argv)
    args.dest.mkdir(exist_ok=True)
    download(args.dest, pins())
    total = check(args.dest)
    print(f"{len(list(args.dest.glob('*.whl')))} wheels, {total:.1f} MiB in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
