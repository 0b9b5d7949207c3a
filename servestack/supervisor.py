"""Start, watch, restart and stop the stack's processes.

Each child runs in its own process group (so a stop reaches the grandchildren too, e.g. vLLM's
engine-core process) with PR_SET_PDEATHSIG, so that even a SIGKILLed launcher leaves no orphans.
A child that dies is reported with the tail of its log and restarted with exponential backoff;
past `max_restarts` the whole stack stops and the launcher exits non-zero.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """The stack cannot start or keep running; the message says why and what to do."""


@dataclass(frozen=True)
class ServiceSpec:
    """One process of the stack."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    host: str
    port: int
    ready_path: str
    log_path: Path
    startup_timeout_s: float = 300.0
    extra_ports: dict[str, int] = field(default_factory=dict)  # more listening ports, e.g. {"grpc": 8151}

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class Child:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    restart_due: float | None = None
    exits: list[int] = field(default_factory=list)


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to this child when the launcher dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def check_ports_free(specs: Sequence[ServiceSpec]) -> None:
    """Raise StackError naming the first port already in use."""
    for spec in specs:
        for port in (spec.port, *spec.extra_ports.values()):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # As uvicorn does: connections in TIME_WAIT from a previous run must not count as "in use".
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((spec.host, port))
                except OSError as exc:
                    raise StackError(
                        f"port {port} for {spec.name} is already in use on {spec.host} ({exc.strerror}): "
                        f"stop what uses it, or pick other ports (servestack up --help: --port-offset, --*-port)"
                    ) from exc


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file (for reports of a dead child)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


class Supervisor:
    """Owns the children. Not thread-safe: drive it from one loop (the launcher's)."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        report: Callable[[str], None],
        max_restarts: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stop_grace_s: float = 15.0,
    ) -> None:
        self.children = {spec.name: Child(spec) for spec in specs}
        self._report = report
        self._max_restarts = max_restarts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._stop_grace_s = stop_grace_s
        self._http = httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0), trust_env=False)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, name: str) -> None:
        child = self.children[name]
        spec = child.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = spec.log_path.open("ab")
        log.write(f"\n--- starting {spec.name}: {' '.join(spec.argv)}\n".encode())
        log.flush()
        env = {**os.environ, **spec.env}
        child.proc = subprocess.Popen(
            list(spec.argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()  # the child holds its own descriptor
        child.started_at = time.monotonic()
        child.ready_at = None
        child.restart_due = None

    def start_all(self) -> None:
        for name in self.children:
            self.start(name)

    def is_ready(self, name: str) -> bool:
        spec = self.children[name].spec
        try:
            return self._http.get(spec.base_url + spec.ready_path).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, on_progress: Callable[[str, float, bool], None] | None = None) -> None:
        """Block until every child answers its readiness probe; handle deaths meanwhile.

        Raises:
            StackError: a child kept dying or missed its start-up deadline.
        """
        last_note = 0.0
        while True:
            self.supervise()
            pending = [c for c in self.children.values() if c.ready_at is None]
            for child in pending:
                if child.proc is not None and child.proc.poll() is None and self.is_ready(child.spec.name):
                    child.ready_at = time.monotonic()
                    if on_progress:
                        on_progress(child.spec.name, child.ready_at - child.started_at, True)
            pending = [c for c in self.children.values() if c.ready_at is None]
            if not pending:
                return
            now = time.monotonic()
            for child in pending:
                if child.proc is not None and now - child.started_at > child.spec.startup_timeout_s:
                    raise StackError(
                        f"{child.spec.name} did not become ready within {child.spec.startup_timeout_s:.0f} s "
                        f"({child.spec.base_url}{child.spec.ready_path}); last log lines:\n"
                        + tail(child.spec.log_path)
                    )
            if on_progress and now - last_note >= 5.0:
                last_note = now
                for child in pending:
                    on_progress(child.spec.name, now - child.started_at, False)
            time.sleep(0.25)

    def supervise(self) -> None:
        """Detect dead children, report them, and restart with backoff (or give up)."""
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_due is not None:
                if now >= child.restart_due:
                    self._report(f"restarting {child.spec.name} (attempt {child.restarts})")
                    self.start(child.spec.name)
                continue
            if child.proc is None:
                continue
            code = child.proc.poll()
            if code is None:
                continue
            child.exits.append(code)
            self._kill_group(child, signal.SIGKILL)  # reap any grandchildren left behind
            child.proc = None
            log_tail = tail(child.spec.log_path)
            if child.restarts >= self._max_restarts:
                raise StackError(
                    f"{child.spec.name} exited with code {code} and was restarted {child.restarts} times; "
                    f"giving up. Last log lines ({child.spec.log_path}):\n{log_tail}"
                )
            delay = min(self._max_backoff_s, self._backoff_s * 2**child.restarts)
            child.restarts += 1
            child.restart_due = now + delay
            self._report(
                f"{child.spec.name} exited with code {code}; restarting in {delay:.0f} s. "
                f"Last log lines ({child.spec.log_path}):\n{log_tail}"
            )

    def _kill_group(self, child: Child, sig: int) -> None:
        if child.proc is None:
            return
        try:
            os.killpg(child.proc.pid, sig)
        except ProcessLookupError:
            return  # the whole group is gone already

    def stop_all(self) -> None:
        """SIGTERM every process group, wait, then SIGKILL what is left. Idempotent."""
        live = [c for c in self.children.values() if c.proc is not None]
        for child in reversed(live):  # router first: it stops taking traffic before the pods go
            self._kill_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_grace_s
        for child in live:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._report(f"{child.spec.name} did not stop within {self._stop_grace_s:.0f} s; killing it")
            # SIGKILL the group in any case: grandchildren may outlive their parent.
            self._kill_group(child, signal.SIGKILL)
            try:
                child.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._report(f"{child.spec.name} (pid {child.proc.pid}) survived SIGKILL")
            child.proc = None
        self._http.close()
