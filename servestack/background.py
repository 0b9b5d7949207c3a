"""Run `servestack up` in the background and wait for it: for tests, `servestack loadtest`, scripts."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from servestack.stackfile import STACK_FILE, StackInfo, read_stack_file
from servestack.up_cmd import DEFAULT_PORTS


class StackStartError(RuntimeError):
    """`servestack up` exited or missed its deadline; the message holds the launcher's log tail."""


def _ports_free(offset: int, host: str) -> bool:
    for port in DEFAULT_PORTS.values():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port + offset))
            except OSError:
                return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux default when unreadable)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def offset_candidates(ephemeral: tuple[int, int]) -> range:
    """Offsets that put every default port outside `ephemeral`.

    The stack's services start one after another over seconds to minutes; a port inside the
    ephemeral range can meanwhile become some outgoing connection's local port (a health poll,
    an exporter's keep-alive), and the service that was to listen there then fails to bind.
    """
    low_port, high_port = min(DEFAULT_PORTS.values()), max(DEFAULT_PORTS.values())
    below = range(max(10, 1024 - low_port), ephemeral[0] - high_port, 10)
    above = range(ephemeral[1] + 1 - low_port, 65536 - high_port, 10)
    return below if len(below) >= len(above) else above


def free_port_offset(host: str = "127.0.0.1") -> int:
    """An offset that moves every default port of the stack onto free ports outside the ephemeral range."""
    candidates = offset_candidates(_ephemeral_range())
    rng = random.Random()
    for _ in range(50):
        offset = rng.choice(candidates)
        if _ports_free(offset, host):
            return offset
    raise StackStartError("no free port range found for a background stack")


def start_stack(
    state_dir: Path,
    *extra_args: str,
    cache_dir: Path | None = None,
    timeout_s: float = 1200.0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], StackInfo]:
    """Start `servestack up` on free ports and block until every service is ready.

    Args:
        state_dir: run-time directory of this stack (stack.json, logs, audit.db); the launcher's own
            output goes to STATE_DIR/launcher.log.
        extra_args: more `servestack up` arguments, e.g. "--no-explainer".
        cache_dir: artifact cache to share (default: the launcher's default).
        timeout_s: deadline for the whole start, first-run preparation included.
        env: variables set on top of this process's environment for the launcher and so for every
            service it starts (e.g. ``SERVESTACK_TRACER=sdk``).

    Returns:
        The launcher process and the stack's info.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    argv: list[str] = [sys.executable, "-m", "servestack", "up", "--state-dir", str(state_dir),
                       "--port-offset", str(free_port_offset())]
    if cache_dir is not None:
        argv += ["--cache-dir", str(cache_dir)]
    argv += list(extra_args)
    log_path = state_dir / "launcher.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **env} if env else None)
    deadline = time.monotonic() + timeout_s
    while not (state_dir / STACK_FILE).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_stack(proc)
            text = log_path.read_text(errors="replace")[-6000:]
            raise StackStartError(f"servestack up did not come up (exit {proc.returncode}):\n{text}")
        time.sleep(0.5)
    return proc, read_stack_file(state_dir)


def stop_stack(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> int:
    """SIGTERM the launcher (it stops every child) and return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def run_args(argv: Sequence[str]) -> list[str]:
    """The argv of `servestack` itself under this interpreter (for subprocesses)."""
    return [sys.executable, "-m", "servestack", *argv]
