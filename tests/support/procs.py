"""Real processes on 127.0.0.1 for tests and bench scripts: a free port, a readiness poll, and a
start/stop that never leaves a process or a file handle behind."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')[-3000:]}" if log is not None and log.exists() else ""


def wait_ready(url: str, proc: subprocess.Popen | None = None, *, log: Path | None = None,
               timeout_s: float = 60.0, interval_s: float = 0.1) -> None:
    """Poll GET ``url`` until it answers 200.

    Raises:
        RuntimeError: ``proc`` exited first (with the tail of ``log``).
        TimeoutError: no 200 within ``timeout_s`` (with the tail of ``log``).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}{_tail(log)}")
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s:g} s{_tail(log)}")
        time.sleep(interval_s)


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; close the pipes the process was given."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@contextlib.contextmanager
def process(argv: Sequence[str], ready_url: str, log: Path, env: Mapping[str, str] | None = None,
            timeout_s: float = 60.0, cwd: Path = REPO, stop_timeout_s: float = 10.0) -> Iterator[subprocess.Popen]:
    """Start ``argv`` (output to ``log``, ``env`` on top of this environment), wait until
    ``ready_url`` answers 200, and stop it afterwards (TERM, then KILL)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})})
    try:
        wait_ready(ready_url, proc, log=log, timeout_s=timeout_s)
        yield proc
    finally:
        stop(proc, stop_timeout_s)
