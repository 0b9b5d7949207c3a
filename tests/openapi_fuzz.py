"""Schema-driven fuzzing of a running service with Schemathesis, bounded for the test suite.

``fuzz(base_url, ...)`` runs the ``st`` CLI against ``{base_url}/openapi.json`` with every phase
(examples, coverage, fuzzing, stateful) and every check: no 5xx, status codes, content types,
headers and bodies as documented, schema-invalid data rejected, schema-valid data accepted, 405s
with a correct ``Allow``, links followed in stateful sequences. ``max_examples`` bounds the cases
per operation (no time budget by default: with one, Schemathesis repeats fuzzing and stateful
testing until it is spent); a fixed seed makes a failure reproducible (the report names each case,
and ``st replay`` replays it). ``assert_clean`` requires zero failures and errors.

The checks that need the schema to say more than JSON Schema can (an image string that is valid
base64 yet not an image is a 400, not a schema violation) are tuned per operation through
``config``, Schemathesis' own TOML configuration, never by dropping a check.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHASES = "examples,coverage,fuzzing,stateful"


@dataclass
class FuzzRun:
    returncode: int
    output: str
    report: dict[str, Any]

    def summary(self) -> str:
        r = self.report
        return (f"exit {self.returncode}; cases {r.get('test_cases')}; failures {r.get('failures')}; "
                f"errors {r.get('errors')}; phases {r.get('phases')}\n{self.output[-6000:]}")


def _st() -> list[str]:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "schemathesis.cli"]


def fuzz(base_url: str, workdir: Path, *, include_paths: tuple[str, ...] = (), headers: dict[str, str] | None = None,
         max_examples: int = 20, max_time_s: int | None = None, seed: int = 20, config: str = "",
         timeout_s: float = 120) -> FuzzRun:
    """Run Schemathesis against the service at ``base_url``; ``workdir`` holds its config, cache and report."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "schemathesis.toml"
    config_path.write_text(config)
    report = workdir / "report.json"
    argv = [*_st(), "--no-color", "--config-file", str(config_path), "run", f"{base_url}/openapi.json",
            "--phases", PHASES, "--checks", "all", "--max-examples", str(max_examples), "--seed", str(seed),
            "--workers", "1", "--request-timeout", "30", "--report", "json", "--report-json-path", str(report)]
    if max_time_s is not None:  # a budget that fuzzing and stateful testing repeat until it is spent
        argv += ["--max-time", str(max_time_s)]
    for path in include_paths:
        argv += ["--include-path", path]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=timeout_s, check=False)
    data = json.loads(report.read_text()) if report.exists() else {}
    return FuzzRun(proc.returncode, proc.stdout + proc.stderr, data)


def assert_clean(run: FuzzRun, *, operations: int, stateful: bool = False) -> None:
    """Zero failures and errors, every selected operation tested, real cases generated."""
    report = run.report
    assert report, f"no report written:\n{run.output[-4000:]}"
    assert run.returncode == 0 and not report["failures"] and not report["errors"], run.summary()
    assert report["operations"]["tested"] == operations, run.summary()
    assert report["test_cases"]["generated"] >= operations * 5, run.summary()
    phases = report["phases"]
    for phase in ("coverage", "fuzzing"):
        assert phases[phase]["status"] == "success", run.summary()
    if stateful:
        assert phases["stateful"]["status"] == "success", run.summary()


@contextlib.contextmanager
def serve(app: Any, timeout_s: float = 30) -> Iterator[str]:
    """Serve an ASGI app (lifespan included) with uvicorn on a free 127.0.0.1 port in a thread."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="openapi-fuzz-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
