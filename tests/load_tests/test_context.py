"""Load-test settings from the environment and the per-process enrolment registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.context import Enrolments, LoadConfig, LoadContext


def test_defaults_and_overrides() -> None:
    assert LoadConfig.from_env({}) == LoadConfig()
    cfg = LoadConfig.from_env({
        "SERVESTACK_API_KEY": "fallback", "SERVESTACK_LOADTEST_SUBJECTS": "50",
        "SERVESTACK_LOADTEST_WAIT_MIN_S": "0", "SERVESTACK_LOADTEST_WAIT_MAX_S": "0",
        "SERVESTACK_LOADTEST_PIN": "face=v2", "SERVESTACK_LOADTEST_EXTRA_DIR": "/tmp/x",
    })
    assert (cfg.api_key, cfg.subjects, cfg.wait_min_s, cfg.wait_max_s) == ("fallback", 50, 0.0, 0.0)
    assert cfg.extra_dir == Path("/tmp/x")
    assert cfg.headers() == {"Authorization": "Bearer fallback", "X-ServeStack-Arm": "face=v2"}
    assert LoadConfig.from_env({"SERVESTACK_LOADTEST_API_KEY": "k", "SERVESTACK_API_KEY": "other"}).api_key == "k"
    assert LoadConfig().headers() == {}


@pytest.mark.parametrize(
    "env",
    [
        {"SERVESTACK_LOADTEST_FINGERPRINT_SHARE": "1.5"},
        {"SERVESTACK_LOADTEST_SUBJECTS": "0"},
        {"SERVESTACK_LOADTEST_WAIT_MIN_S": "2", "SERVESTACK_LOADTEST_WAIT_MAX_S": "1"},
        {"SERVESTACK_LOADTEST_HASH_BATCH": "65"},
        {"SERVESTACK_LOADTEST_SEED": "x"},
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        LoadConfig.from_env(env)


def test_enrolments_claim_once_and_forget_failures() -> None:
    enrolments = Enrolments()
    assert enrolments.claim(3) is True
    assert enrolments.claim(3) is False  # someone else enrols it: wait
    enrolments.finish(3, ok=True)
    assert enrolments.is_enrolled(3) and enrolments.wait(3, timeout_s=0.01)
    assert enrolments.claim(3) is False
    assert enrolments.claim(4) is True
    enrolments.finish(4, ok=False)
    assert not enrolments.is_enrolled(4)
    assert enrolments.wait(4, timeout_s=0.01) is False  # nobody enrolling it now
    assert enrolments.claim(4) is True  # a later draw retries
    assert enrolments.count == 1


def test_context_is_built_once_per_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVESTACK_LOADTEST_IMAGES", "2")
    monkeypatch.setenv("SERVESTACK_LOADTEST_SUBJECTS", "10")

    class Env:
        pass

    env = Env()
    ctx = LoadContext.of(env)
    assert LoadContext.of(env) is ctx
    assert ctx.images.size == 2 and ctx.subjects.population == 10
    first, second = ctx.next_new_subject(), ctx.next_new_subject()
    assert first[0] != second[0] and (first[1], second[1]) == (0, 1)
