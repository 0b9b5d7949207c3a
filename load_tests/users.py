"""Locust users of the router's public API, one `FastHttpUser` per traffic mix.

| class | traffic |
| --- | --- |
| `VerifyUser` | verify-heavy: /v1/verify (face, 30 % face+fingerprint), now and then an audit read |
| `EnrollUser` | onboarding: /v1/enroll of new subjects with both modalities |
| `HashUser` | /v1/hash of face or fingerprint images (batch of SERVESTACK_LOADTEST_HASH_BATCH) |
| `ExplainUser` | a verification, then its explanation streamed over SSE (time to first token) |
| `MixedUser` | 70 % verify, 10 % enrol, 10 % hash, 5 % audit read, 5 % streamed explanation |
| `LabelledUser` | genuine and impostor probes with known truth, each outcome posted back (FAR/FRR per arm) |

FastHttpUser (geventhttpclient) because on 2 cores HttpUser saturates before the server does.
Every verified subject is enrolled first, once per Locust process (concurrent users drawing the
same new subject wait for one enrolment). Requests are named by endpoint template, so Locust's
table has one row per endpoint; which canary arm served each verification goes to the
RunRecorder (see recorder.py for why not into Locust's table).

Failures carry a parseable reason: `HTTP <status> <error code>` for error responses,
`HTTP 0 <exception>` when no response came, `protocol: ...` for a 200 with a wrong body, and
`SSE ...` for streams; `load_tests.summary` groups errors by it.
"""

from __future__ import annotations

import csv
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from locust import events, task
from locust.contrib.fasthttp import FastHttpUser, ResponseContextManager
from locust.runners import WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from load_tests.context import CONTEXT_ATTR, ENV_PREFIX, LoadContext
from load_tests.payloads import (
    AUDIT_PATH,
    ENROLL_PATH,
    EXPLANATION_PATH,
    F_AUDIT_ID,
    HASH_PATH,
    MODALITIES,
    OUTCOME_PATH,
    VERIFY_PATH,
    Modality,
    arms_of,
    enroll_body,
    error_code_of,
    hash_arm_of,
    hash_body,
    subject_id,
    verify_body,
)
from load_tests.sse import SSEParser
from load_tests.summary import FINAL_FAILURES_CSV, FINAL_STATS_CSV

AUDIT_NAME = AUDIT_PATH.replace("{audit_id}", "{id}")
EXPLANATION_NAME = EXPLANATION_PATH.replace("{audit_id}", "{id}")
OUTCOME_NAME = OUTCOME_PATH.replace("{audit_id}", "{id}")


def _json(resp: ResponseContextManager) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def fail_status(resp: ResponseContextManager) -> None:
    """Mark an error response failed with `HTTP <status> <code>` (the summary parses this)."""
    if not resp.status_code:
        error = getattr(resp, "error", None)
        resp.failure(f"HTTP 0 {type(error).__name__ if error else 'no response'}")
        return
    code = error_code_of(_json(resp)) if resp.text else ""
    resp.failure(f"HTTP {resp.status_code} {code}".strip())


def _stream_lines(resp: ResponseContextManager) -> Iterator[bytes]:
    """The body line by line, each as soon as it arrives.

    FastResponse.iter_content(n) blocks until n bytes (or the end) arrive, which would hide the
    time to first token; geventhttpclient's readline returns each line as soon as it is complete.
    """
    raw = getattr(resp, "_response", None)
    if raw is None or not hasattr(raw, "readline"):
        raise RuntimeError("this Locust version's FastResponse has no raw response to stream from")
    while line := raw.readline(b"\n"):
        yield bytes(line)


class ServeStackUser(FastHttpUser):
    """Shared actions; subclasses choose the mix with @task weights."""

    abstract = True
    # Explanations stream from an LLM on CPU: allow long reads; connecting is quick or broken.
    network_timeout = float(os.environ.get("SERVESTACK_LOADTEST_TIMEOUT_S", "120"))
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.ctx = LoadContext.of(self.environment)
        self.headers = self.ctx.config.headers()
        self.audit_ids: deque[str] = deque(maxlen=64)

    def wait_time(self) -> float:
        cfg = self.ctx.config
        return float(self.ctx.rng.uniform(cfg.wait_min_s, cfg.wait_max_s))

    # --- enrolment ---------------------------------------------------------------------------------
    def enroll(self, wire_id: str, image_index: int, existing_ok: bool = False) -> bool:
        """Enrol a subject; with ``existing_ok`` a 409 subject_exists (an earlier run enrolled the
        same population with the same images) counts as enrolled."""
        images = {m: self.ctx.images.enrolment(image_index, m).b64 for m in MODALITIES}
        with self.client.post(ENROLL_PATH, json=enroll_body(wire_id, images), headers=self.headers,
                              name=ENROLL_PATH, catch_response=True) as resp:
            if existing_ok and resp.status_code == 409:
                resp.success()
                return True
            if resp.status_code not in (200, 201):
                fail_status(resp)
                return False
            return True

    def ensure_enrolled(self, subject: int) -> bool:
        enrolments = self.ctx.enrolments
        if enrolments.is_enrolled(subject):
            return True
        if not enrolments.claim(subject):
            return enrolments.wait(subject, timeout_s=self.network_timeout)
        ok = False
        try:
            ok = self.enroll(subject_id(subject), subject, existing_ok=True)
        finally:
            # Also on GreenletExit at test stop: waiters must not hang on an abandoned claim.
            enrolments.finish(subject, ok)
        return ok

    def enroll_new(self) -> None:
        wire_id, image_index = self.ctx.next_new_subject()
        self.enroll(wire_id, image_index)

    # --- verification ------------------------------------------------------------------------------
    def _probe_images(self, subject: int, modalities: tuple[Modality, ...], impostor_share: float
                      ) -> tuple[dict[Modality, str], bool]:
        """The probe images and whether they are the subject's own (genuine) or another scene's."""
        ctx = self.ctx
        probe = subject
        if ctx.rng.random() < impostor_share and ctx.images.size > 1:
            probe = subject + 1 + int(ctx.rng.integers(ctx.images.size - 1))  # another scene
        return {m: ctx.images.probe_of(probe, m).b64 for m in modalities}, probe == subject

    def verify(self, labelled: bool = False) -> str | None:
        """One verification of a Zipf-drawn subject; returns its audit id when it succeeded.

        With ``labelled`` the impostor share is the labelled scenario's, and the known truth of
        the probe is posted back as the record's outcome.
        """
        ctx = self.ctx
        subject = ctx.subjects.sample(ctx.rng)
        if not self.ensure_enrolled(subject):
            return None
        both = ctx.rng.random() < ctx.config.fingerprint_share
        modalities: tuple[Modality, ...] = MODALITIES if both else ("face",)
        share = ctx.config.labelled_impostor_share if labelled else ctx.config.impostor_share
        images, genuine = self._probe_images(subject, modalities, share)
        body = verify_body(subject_id(subject), images)
        with self.client.post(VERIFY_PATH, json=body, headers=self.headers,
                              name=f"{VERIFY_PATH} ({'+'.join(modalities)})", catch_response=True) as resp:
            if resp.status_code == 429 and error_code_of(_json(resp)) == "subject_locked":
                resp.success()  # the router throttling repeated impostor tries on one subject: working as meant
                return None
            if resp.status_code != 200:
                fail_status(resp)
                return None
            data = _json(resp)
            arms = arms_of(data) if isinstance(data, dict) else {}
            if not arms or not isinstance(data, dict) or not data.get(F_AUDIT_ID):
                resp.failure("protocol: /v1/verify response without arms or audit id")
                return None
            ctx.recorder.record_arms("verify", arms, resp.request_meta["response_time"])
            audit_id = str(data[F_AUDIT_ID])
            self.audit_ids.append(audit_id)
        if labelled:
            self.post_outcome(audit_id, genuine)
        return audit_id

    def post_outcome(self, audit_id: str, genuine: bool) -> None:
        with self.client.post(OUTCOME_PATH.format(audit_id=audit_id), json={"genuine": genuine},
                              headers=self.headers, name=OUTCOME_NAME, catch_response=True) as resp:
            if resp.status_code != 200:
                fail_status(resp)

    def read_audit(self) -> None:
        if not self.audit_ids:
            self.verify()
            return
        audit_id = self.audit_ids[int(self.ctx.rng.integers(len(self.audit_ids)))]
        with self.client.get(AUDIT_PATH.format(audit_id=audit_id), headers=self.headers, name=AUDIT_NAME,
                             catch_response=True) as resp:
            if resp.status_code != 200:
                fail_status(resp)

    # --- hashing -----------------------------------------------------------------------------------
    def hash(self) -> None:
        ctx = self.ctx
        modality: Modality = "fingerprint" if ctx.rng.random() < ctx.config.fingerprint_share else "face"
        subjects = [ctx.subjects.sample(ctx.rng) for _ in range(ctx.config.hash_batch)]
        images = [ctx.images.probe_of(s, modality).b64 for s in subjects]
        body = hash_body(modality, images, subject_id=subject_id(subjects[0]))
        with self.client.post(HASH_PATH, json=body, headers=self.headers, name=f"{HASH_PATH} ({modality})",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                fail_status(resp)
                return
            data = _json(resp)
            arms = hash_arm_of(data) if isinstance(data, dict) else {}
            codes = data.get("codes") if isinstance(data, dict) else None
            if not arms or not isinstance(codes, list) or len(codes) != len(images):
                resp.failure("protocol: /v1/hash response without arm or with a wrong number of codes")
                return
            ctx.recorder.record_arms("hash", arms, resp.request_meta["response_time"])

    # --- explanation -------------------------------------------------------------------------------
    def explain(self) -> None:
        """Verify, then stream the decision's explanation; Locust's time is the whole stream."""
        audit_id = self.verify()
        if audit_id is None:
            return
        headers = {**self.headers, "Accept": "text/event-stream"}
        started = time.perf_counter()
        with self.client.get(EXPLANATION_PATH.format(audit_id=audit_id), headers=headers, stream=True,
                             name=EXPLANATION_NAME, catch_response=True) as resp:
            if resp.status_code != 200:
                fail_status(resp)
                return
            parser = SSEParser()
            ttft_ms: float | None = None
            final: dict[str, Any] | None = None
            error_code = ""
            try:
                for chunk in _stream_lines(resp):
                    for event in parser.feed(chunk):
                        if ttft_ms is None and event.event in ("delta", "final"):
                            ttft_ms = (time.perf_counter() - started) * 1000
                        if event.event == "final":
                            final = event.json()
                        elif event.event == "error":
                            error_code = error_code_of(event.json()) or "unknown"
            except Exception as exc:  # noqa: BLE001 - reported as this request's failure, not swallowed
                resp.failure(f"SSE read error: {type(exc).__name__}")
                return
            total_ms = (time.perf_counter() - started) * 1000
            # stream=True makes Locust time only the response headers; report the whole stream.
            resp.request_meta["response_time"] = total_ms
            if error_code:
                resp.failure(f"SSE error {error_code}")
            elif final is None or not final.get("text"):
                resp.failure("SSE stream ended without a final event with text")
            else:
                self.ctx.recorder.record_stream(ttft_ms, total_ms)


class VerifyUser(ServeStackUser):
    """Verify-heavy: what a production login / access-control front end sends."""

    @task(10)
    def verify_task(self) -> None:
        self.verify()

    @task(1)
    def audit_task(self) -> None:
        self.read_audit()


class EnrollUser(ServeStackUser):
    """Onboarding: enrol new subjects (both modalities, templates on every arm)."""

    @task
    def enroll_task(self) -> None:
        self.enroll_new()


class HashUser(ServeStackUser):
    """Raw codes, nothing stored: batch jobs and integrators that keep their own templates."""

    @task
    def hash_task(self) -> None:
        self.hash()


class ExplainUser(ServeStackUser):
    """Verify, then read the streamed explanation: exercises the LLM pod end to end."""

    @task
    def explain_task(self) -> None:
        self.explain()


class LabelledUser(ServeStackUser):
    """Verifications with known truth (genuine probes and impostor probes of another scene), each
    outcome posted to /v1/audit/{id}/outcome: the experiment report then has FAR and FRR per arm."""

    @task
    def labelled_task(self) -> None:
        self.verify(labelled=True)


class MixedUser(ServeStackUser):
    """Production-like mix: 70 % verify, 10 % enrol, 10 % hash, 5 % audit read, 5 % explain."""

    @task(14)
    def verify_task(self) -> None:
        self.verify()

    @task(2)
    def enroll_task(self) -> None:
        self.enroll_new()

    @task(2)
    def hash_task(self) -> None:
        self.hash()

    @task(1)
    def audit_task(self) -> None:
        self.read_audit()

    @task(1)
    def explain_task(self) -> None:
        self.explain()


@events.quitting.add_listener
def _write_extras(environment: Any, **_kwargs: Any) -> None:
    """Leave the final statistics for the summary, when SERVESTACK_LOADTEST_EXTRA_DIR is set.

    Every process with users writes its per-arm statistics. The process that holds the whole
    run's statistics (the only one, or the master of --processes) also writes the final request
    and failure tables: Locust's own --csv files are rewritten once a second and can miss the
    last second of a run, while `quitting` fires after the users have stopped.
    """
    extra = os.environ.get(ENV_PREFIX + "EXTRA_DIR")
    if not extra:
        return
    ctx = getattr(environment, CONTEXT_ATTR, None)
    if ctx is not None:
        ctx.recorder.write(Path(extra))
    if not isinstance(environment.runner, WorkerRunner):
        write_final_csvs(environment, Path(extra))


def write_final_csvs(environment: Any, directory: Path) -> None:
    """The run's final request and failure tables, in the format of Locust's --csv files."""
    directory.mkdir(parents=True, exist_ok=True)
    tables = StatsCSV(environment, PERCENTILES_TO_REPORT)
    with (directory / FINAL_STATS_CSV).open("w", newline="") as fh:
        tables.requests_csv(csv.writer(fh))
    with (directory / FINAL_FAILURES_CSV).open("w", newline="") as fh:
        tables.failures_csv(csv.writer(fh))
