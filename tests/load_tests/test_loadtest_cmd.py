"""`servestack loadtest`: options, the Locust command, and the exit status from the limits.

Locust itself is replaced here by a function that leaves recorded tables (fixtures) in the
output directory; tests/load_tests/test_loadtest_fake.py runs the real thing.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from servestack import loadtest_cmd
from servestack.loadtest_cmd import parse_duration

FIXTURES = Path(__file__).parent / "fixtures"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="servestack")
    loadtest_cmd.register(parser.add_subparsers())
    return parser.parse_args(["loadtest", *argv])


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("90", 90), ("5m", 300), ("1h30m", 5400),
                                               ("1m30s", 90), ("2.5s", 2.5)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0s", "5x", "-3s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_constant_load_command(tmp_path: Path) -> None:
    args = _parse("--scenario", "verify", "--users", "20", "--duration", "2m", "--locust-arg=--processes=2")
    cmd = loadtest_cmd.build_locust_command(args, "http://127.0.0.1:9", tmp_path)
    assert cmd[1:4] == ["-m", "locust", "-f"]
    assert cmd[4].endswith("load_tests/locustfiles/verify.py") and Path(cmd[4]).exists()
    joined = " ".join(cmd)
    assert "--users 20 --spawn-rate 4 --run-time 120s" in joined
    assert f"--csv {tmp_path}/locust --html {tmp_path}/report.html" in joined
    assert cmd[-1] == "--processes=2"
    env = loadtest_cmd.build_locust_env(args, "secret", tmp_path)
    assert env == {"SERVESTACK_LOADTEST_API_KEY": "secret", "SERVESTACK_LOADTEST_EXTRA_DIR": str(tmp_path)}
    shown = loadtest_cmd.printable_command(cmd, env)
    assert "secret" not in shown and "SERVESTACK_LOADTEST_API_KEY='***'" in shown


def test_shape_command_passes_users_and_duration_to_the_shape(tmp_path: Path) -> None:
    args = _parse("--scenario", "mixed", "--shape", "spike", "--users", "30", "--duration", "90s",
                  "--spawn-rate", "3", "--think-time", "0", "0.2", "--subjects", "77")
    cmd = loadtest_cmd.build_locust_command(args, "http://h", tmp_path)
    files = cmd[cmd.index("-f") + 1].split(",")
    assert [Path(f).name for f in files] == ["mixed.py", "shape_spike.py"] and all(Path(f).exists() for f in files)
    assert "--users" not in cmd and "--run-time" not in cmd  # the shape decides
    env = loadtest_cmd.build_locust_env(args, "k", tmp_path)
    assert env["SERVESTACK_SHAPE_USERS"] == "30" and env["SERVESTACK_SHAPE_DURATION_S"] == "90"
    assert env["SERVESTACK_SHAPE_SPAWN_RATE"] == "3"
    assert (env["SERVESTACK_LOADTEST_WAIT_MIN_S"], env["SERVESTACK_LOADTEST_WAIT_MAX_S"]) == ("0.0", "0.2")
    assert env["SERVESTACK_LOADTEST_SUBJECTS"] == "77"


def _fake_locust(fixture: str, rc: int = 0):  # noqa: ANN202 - test double
    def run_locust(cmd: list[str], env: dict[str, str], timeout_s: float) -> int:
        out = Path(env["SERVESTACK_LOADTEST_EXTRA_DIR"])
        for path in (FIXTURES / fixture).iterdir():
            shutil.copy(path, out / path.name)
        return rc
    return run_locust


@pytest.mark.parametrize(
    ("fixture", "limits", "expected"),
    [
        ("run_ok", [], 0),
        ("run_ok", ["--max-p99-ms", "30"], 1),  # POST /v1/enroll p99 31 ms
        ("run_503", [], 1),  # 6.7 % errors > 1 %
        ("run_503", ["--max-error-rate", "0.1"], 0),
        ("run_503", ["--max-error-rate", "-1"], 0),  # no limit
    ],
)
def test_exit_status_follows_the_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fixture: str,
                                        limits: list[str], expected: int) -> None:
    monkeypatch.setattr(loadtest_cmd, "run_locust", _fake_locust(fixture))
    args = _parse("--host", "http://127.0.0.1:9", "--api-key", "k", "--out", str(tmp_path / "out"),
                  "--duration", "5s", *limits)
    assert args.func(args) == expected
    assert (tmp_path / "out" / "summary.json").exists() and (tmp_path / "out" / "summary.md").exists()


def test_a_crashed_locust_is_status_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loadtest_cmd, "run_locust", _fake_locust("run_ok", rc=1))
    args = _parse("--host", "http://127.0.0.1:9", "--out", str(tmp_path))
    assert args.func(args) == 2
    assert not (tmp_path / "summary.json").exists()


def test_no_stack_and_no_start_is_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A stack file whose launcher is gone does not count as a running stack.
    (tmp_path / "stack.json").write_text('{"services": {"router": "http://127.0.0.1:9"}, "api_key": "k", '
                                         '"admin_api_key": "a", "pid": 999999999}')
    args = _parse("--state-dir", str(tmp_path), "--no-start", "--out", str(tmp_path / "out"))
    assert args.func(args) == 2
    assert "no running stack" in capsys.readouterr().err


def test_api_key_comes_from_the_stack_file_with_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SERVESTACK_API_KEY", raising=False)
    (tmp_path / "stack.json").write_text('{"services": {}, "api_key": "from-file", "admin_api_key": "a"}')
    seen: dict[str, str] = {}

    def run_locust(cmd: list[str], env: dict[str, str], timeout_s: float) -> int:
        seen.update(env)
        return _fake_locust("run_ok")(cmd, env, timeout_s)

    monkeypatch.setattr(loadtest_cmd, "run_locust", run_locust)
    args = _parse("--host", "http://127.0.0.1:9/", "--state-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert args.func(args) == 0
    assert seen["SERVESTACK_LOADTEST_API_KEY"] == "from-file"


def test_without_a_stack_one_is_started_and_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from servestack import background
    from servestack.stackfile import StackInfo

    calls: list[tuple[str, object]] = []
    launcher = object()

    def start_stack(state_dir: Path, *extra: str, cache_dir: Path, timeout_s: float) -> tuple[object, StackInfo]:
        calls.append(("start", (state_dir, extra, cache_dir, timeout_s)))
        return launcher, StackInfo({"router": "http://127.0.0.1:9"}, "started-key", "a", state_dir)

    monkeypatch.setattr(background, "start_stack", start_stack)
    monkeypatch.setattr(background, "stop_stack", lambda proc: calls.append(("stop", proc)) or 0)
    seen: dict[str, str] = {}

    def run_locust(cmd: list[str], env: dict[str, str], timeout_s: float) -> int:
        seen.update(env, host=cmd[cmd.index("--host") + 1])
        return _fake_locust("run_ok")(cmd, env, timeout_s)

    monkeypatch.setattr(loadtest_cmd, "run_locust", run_locust)
    monkeypatch.delenv("SERVESTACK_API_KEY", raising=False)
    out = tmp_path / "out"
    args = _parse("--state-dir", str(tmp_path / "state"), "--out", str(out), "--up-arg=--no-explainer",
                  "--stack-timeout-s", "60")
    assert args.func(args) == 0
    assert calls == [("start", (out / "stack", ("--no-explainer",), (tmp_path / "state" / "cache").resolve(), 60.0)),
                     ("stop", launcher)]
    assert (seen["host"], seen["SERVESTACK_LOADTEST_API_KEY"]) == ("http://127.0.0.1:9", "started-key")
