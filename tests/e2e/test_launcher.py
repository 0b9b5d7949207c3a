"""`servestack up` as a user runs it: every service ready, a killed child restarted, SIGTERM clean.

Runs its own small stack (no explainer: the vLLM start is covered by the session stack) so that it
can kill and stop it without disturbing the other whole-stack tests.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from servestack.background import start_stack, stop_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".servestack" / "cache"
READY_PATHS = {"router": "/readyz", "hasher-face-v1": "/v2/health/ready", "hasher-face-v2": "/v2/health/ready",
               "hasher-fingerprint-v1": "/v2/health/ready"}


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def port_listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_up_readiness_restart_and_clean_sigterm(tmp_path: Path) -> None:
    proc, info = start_stack(tmp_path, "--no-explainer", "--max-restarts", "2", cache_dir=CACHE_DIR, cwd=REPO)
    try:
        assert set(info.services) == set(READY_PATHS)
        assert info.api_key and info.admin_api_key and info.api_key != info.admin_api_key
        for name, path in READY_PATHS.items():
            assert httpx.get(info.services[name] + path, timeout=5).status_code == 200, name
        procs = descendants(proc.pid)
        assert len(children_of(proc.pid)) == 4

        # Kill one hasher: the launcher must notice, report it, and bring it back.
        victim_url = info.services["hasher-fingerprint-v1"]
        port_var = f"SERVESTACK_HASHER_PORT={victim_url.rsplit(':', 1)[1]}".encode()
        victim = next(p for p in children_of(proc.pid) if port_var in Path(f"/proc/{p}/environ").read_bytes())
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 180
        log = tmp_path / "launcher.log"
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "hasher-fingerprint-v1 exited with code -9" in text and victim not in children_of(proc.pid):
                try:
                    if httpx.get(victim_url + "/v2/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        else:
            pytest.fail("the killed hasher was not detected and restarted:\n" + log.read_text()[-3000:])
        procs |= descendants(proc.pid)
    finally:
        code = stop_stack(proc)
    assert code == 0
    leftover = [p for p in procs if alive(p)]
    assert leftover == [], f"processes survived SIGTERM: {leftover}"
    for name, url in info.services.items():
        assert not port_listening(url), f"{name} still listens on {url}"
    assert not (tmp_path / "stack.json").exists()
