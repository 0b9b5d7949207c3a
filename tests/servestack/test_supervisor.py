"""Supervisor behaviour with tiny real child processes (no model, fast)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from servestack.supervisor import ServiceSpec, StackError, Supervisor, check_ports_free


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A child that serves /ready and spawns a grandchild (like vLLM's engine core) that writes its pid.
SERVER = textwrap.dedent(
    """
    import http.server, os, subprocess, sys
    port, pidfile = int(sys.argv[1]), sys.argv[2]
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(pidfile, "w") as fh:
        fh.write(f"{os.getpid()} {grandchild.pid}")
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ready" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


def spec(tmp_path: Path, name: str, argv: list[str], port: int, timeout_s: float = 30.0) -> ServiceSpec:
    return ServiceSpec(name=name, argv=argv, env={}, host="127.0.0.1", port=port, ready_path="/ready",
                       log_path=tmp_path / f"{name}.log", startup_timeout_s=timeout_s)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone: it only waits for its parent to reap it.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_stop_all_reaps_children_and_grandchildren_and_frees_ports(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    ports = [free_port(), free_port()]
    specs = [spec(tmp_path, f"svc{i}", [sys.executable, str(script), str(p), str(tmp_path / f"pid{i}")], p)
             for i, p in enumerate(ports)]
    messages: list[str] = []
    sup = Supervisor(specs, report=messages.append)
    sup.start_all()
    ready: list[str] = []
    sup.wait_ready(lambda name, _t, ok: ready.append(name) if ok else None)
    assert sorted(ready) == ["svc0", "svc1"]
    pids = [int(x) for i in range(2) for x in (tmp_path / f"pid{i}").read_text().split()]
    assert all(alive(p) for p in pids)
    sup.stop_all()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "a child or grandchild survived stop_all"
    check_ports_free(specs)  # raises if a port is still held


def test_dead_child_is_reported_with_log_tail_and_restarted(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    s = spec(tmp_path, "svc", [sys.executable, str(script), str(port), str(tmp_path / "pid")], port)
    messages: list[str] = []
    sup = Supervisor([s], report=messages.append, backoff_s=0.1)
    try:
        sup.start_all()
        sup.wait_ready()
        first_pid = sup.children["svc"].proc.pid
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sup.supervise()
            child = sup.children["svc"]
            if child.proc is not None and child.proc.pid != first_pid and sup.is_ready("svc"):
                break
            time.sleep(0.1)
        child = sup.children["svc"]
        assert child.restarts == 1
        assert child.exits == [-signal.SIGKILL]
        assert child.proc is not None and child.proc.pid != first_pid
        assert any("exited with code -9" in m and "restarting" in m for m in messages)
        assert any("--- starting svc" in m for m in messages), "the report carries the log tail"
    finally:
        sup.stop_all()


def test_child_that_keeps_dying_stops_the_stack_with_its_log(tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"]
    sup = Supervisor([spec(tmp_path, "bad", crash, free_port())], report=lambda m: None,
                     max_restarts=2, backoff_s=0.05)
    sup.start_all()
    with pytest.raises(StackError) as err:
        sup.wait_ready()
    assert "bad exited with code 3" in str(err.value)
    assert "restarted 2 times" in str(err.value)
    assert "boom: bad config" in str(err.value)
    sup.stop_all()


def test_readiness_deadline_names_the_service(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    sup = Supervisor([spec(tmp_path, "slow", sleeper, free_port(), timeout_s=0.5)], report=lambda m: None)
    sup.start_all()
    try:
        with pytest.raises(StackError, match="slow did not become ready within 0 s|slow did not become ready"):
            sup.wait_ready()
    finally:
        sup.stop_all()


def test_port_in_use_is_a_clear_error_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} for router is already in use"):
            check_ports_free([spec(tmp_path, "router", ["true"], port)])
