"""Per-process load-test state: settings from the environment, images, subjects, enrolments.

One `LoadContext` per Locust process, attached to Locust's `Environment` (never a module global),
shared by all simulated users of that process. Locust runs users as greenlets in one thread, so
plain dicts are safe; waiting for another user's enrolment uses a gevent Event.

Settings (environment variables; `servestack loadtest` sets them from its options):

| variable | default | meaning |
| --- | --- | --- |
| `SERVESTACK_LOADTEST_API_KEY` | `$SERVESTACK_API_KEY` | client key sent as `Authorization: Bearer` |
| `SERVESTACK_LOADTEST_SUBJECTS` | 1000 | size of the enrolled population |
| `SERVESTACK_LOADTEST_ZIPF_EXPONENT` | 1.1 | popularity skew of subjects (0 = uniform) |
| `SERVESTACK_LOADTEST_IMAGES` | 8 | distinct generated scenes per modality |
| `SERVESTACK_LOADTEST_SEED` | 0 | seed of images, subjects and choices |
| `SERVESTACK_LOADTEST_FINGERPRINT_SHARE` | 0.3 | share of verifications that also send a fingerprint |
| `SERVESTACK_LOADTEST_IMPOSTOR_SHARE` | 0.05 | share of verifications with another subject's probe |
| `SERVESTACK_LOADTEST_HASH_BATCH` | 1 | images per /v1/hash request |
| `SERVESTACK_LOADTEST_WAIT_MIN_S`, `..._WAIT_MAX_S` | 0.1, 0.5 | think time between tasks |
| `SERVESTACK_LOADTEST_PIN` | unset | `X-ServeStack-Arm` value, e.g. `face=v2` |
| `SERVESTACK_LOADTEST_EXTRA_DIR` | unset | where each process writes per-arm stats at exit |
| `SERVESTACK_LOADTEST_TIMEOUT_S` | 120 | read timeout per request (streams included); users.py |
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent.event
import numpy as np

from load_tests.payloads import ImagePool, ZipfSubjects
from load_tests.recorder import RunRecorder

ENV_PREFIX = "SERVESTACK_LOADTEST_"
CONTEXT_ATTR = "servestack_load"


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(ENV_PREFIX + name)
    value = default if raw in (None, "") else float(raw)
    if not lo <= value <= hi:
        raise ValueError(f"{ENV_PREFIX}{name}={value} outside [{lo}, {hi}]")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    return int(_float(env, name, default, lo, hi))


@dataclass(frozen=True)
class LoadConfig:
    api_key: str = ""
    subjects: int = 1000
    zipf_exponent: float = 1.1
    images: int = 8
    seed: int = 0
    fingerprint_share: float = 0.3
    impostor_share: float = 0.05
    labelled_impostor_share: float = 0.3
    hash_batch: int = 1
    wait_min_s: float = 0.1
    wait_max_s: float = 0.5
    pin: str = ""
    extra_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LoadConfig:
        """Validated settings; a bad value fails the run at start, not after minutes of load."""
        wait_min = _float(env, "WAIT_MIN_S", 0.1, 0, 3600)
        wait_max = _float(env, "WAIT_MAX_S", max(0.5, wait_min), 0, 3600)
        if wait_max < wait_min:
            raise ValueError(f"{ENV_PREFIX}WAIT_MAX_S < WAIT_MIN_S ({wait_max} < {wait_min})")
        extra = env.get(ENV_PREFIX + "EXTRA_DIR")
        return cls(
            api_key=env.get(ENV_PREFIX + "API_KEY") or env.get("SERVESTACK_API_KEY", ""),
            subjects=_int(env, "SUBJECTS", 1000, 1, 10_000_000),
            zipf_exponent=_float(env, "ZIPF_EXPONENT", 1.1, 0, 10),
            images=_int(env, "IMAGES", 8, 1, 1024),
            seed=_int(env, "SEED", 0, 0, 2**31),
            fingerprint_share=_float(env, "FINGERPRINT_SHARE", 0.3, 0, 1),
            impostor_share=_float(env, "IMPOSTOR_SHARE", 0.05, 0, 1),
            labelled_impostor_share=_float(env, "LABELLED_IMPOSTOR_SHARE", 0.3, 0, 1),
            hash_batch=_int(env, "HASH_BATCH", 1, 1, 64),
            wait_min_s=wait_min,
            wait_max_s=wait_max,
            pin=env.get(ENV_PREFIX + "PIN", ""),
            extra_dir=Path(extra) if extra else None,
        )

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if self.pin:
            headers["X-ServeStack-Arm"] = self.pin
        return headers


class Enrolments:
    """Which subjects this process has enrolled; concurrent users wait for one enrolment.

    `claim(s)` returns True to exactly one caller per subject, which enrols and calls
    `finish(s, ok)`; others `wait(s)` for that outcome. A failed enrolment is forgotten so
    that a later draw retries it.
    """

    def __init__(self) -> None:
        self._done: set[int] = set()
        self._pending: dict[int, gevent.event.AsyncResult] = {}

    def is_enrolled(self, subject: int) -> bool:
        return subject in self._done

    def claim(self, subject: int) -> bool:
        if subject in self._done or subject in self._pending:
            return False
        self._pending[subject] = gevent.event.AsyncResult()
        return True

    def finish(self, subject: int, ok: bool) -> None:
        result = self._pending.pop(subject)
        if ok:
            self._done.add(subject)
        result.set(ok)

    def wait(self, subject: int, timeout_s: float) -> bool:
        """True once the subject is enrolled (by anyone), False on failure or timeout."""
        if subject in self._done:
            return True
        pending = self._pending.get(subject)
        if pending is None:
            return False
        try:
            return bool(pending.get(block=True, timeout=timeout_s))
        except gevent.Timeout:
            return False

    @property
    def count(self) -> int:
        return len(self._done)


@dataclass
class LoadContext:
    config: LoadConfig
    images: ImagePool
    subjects: ZipfSubjects
    rng: np.random.Generator
    enrolments: Enrolments = field(default_factory=Enrolments)
    recorder: RunRecorder = field(default_factory=RunRecorder)
    # New subjects of the enrol scenario: numbered per process, never drawn for verification.
    new_subject_ids: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def build(cls, config: LoadConfig) -> LoadContext:
        return cls(
            config=config,
            images=ImagePool.generate(config.images, config.seed),
            subjects=ZipfSubjects(config.subjects, config.zipf_exponent, config.seed),
            # The pid keeps processes of one run (--processes) from drawing identical sequences.
            rng=np.random.default_rng([config.seed, os.getpid()]),
        )

    @classmethod
    def of(cls, environment: Any) -> LoadContext:
        """The context of a Locust Environment, built from os.environ on first use."""
        ctx = getattr(environment, CONTEXT_ATTR, None)
        if ctx is None:
            ctx = cls.build(LoadConfig.from_env(os.environ))
            setattr(environment, CONTEXT_ATTR, ctx)
        return ctx

    def next_new_subject(self) -> tuple[str, int]:
        """(wire id, image index) of a subject never enrolled before by this process."""
        n = next(self.new_subject_ids)
        return f"lt-new-{os.getpid()}-{n:07d}", n
