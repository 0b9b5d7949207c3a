"""Steady verification traffic while a canary runs: the local stand-in for Flagger's load tester.

A canary with no traffic holds forever ("not enough traffic"). In a cluster, real users (or
Flagger's loadtester webhook) supply it; on a laptop, ``servestack canary start --load-rps N``
runs this: it enrols ``subjects`` subjects once, then verifies random ones at a fixed rate with
probe images, so the sticky split sends each subject to the arm its bucket falls in.

Images are given by the caller (bytes as base64 strings), so this module generates nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subject:
    subject_id: str
    enrol_b64: str
    probe_b64: str


class VerifyTraffic:
    def __init__(self, http: httpx.AsyncClient, router_url: str, api_key: str, modality: str,
                 subjects: Sequence[Subject], *, rate_per_s: float, timeout_s: float = 30.0, seed: int = 0) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        self._http = http
        self._base = router_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._modality = modality
        self._subjects = list(subjects)
        self._rate = rate_per_s
        self._timeout_s = timeout_s
        self._rng = random.Random(seed)
        self.statuses: Counter[int] = Counter()

    async def enrol(self) -> int:
        """Enrol every subject; one enrolled by an earlier run (409 subject_exists: same seeded
        images, so the same templates) counts as enrolled."""
        ok = 0
        for s in self._subjects:
            resp = await self._http.post(f"{self._base}/v1/enroll", headers=self._headers, timeout=self._timeout_s,
                                         json={"subject_id": s.subject_id, self._modality: s.enrol_b64})
            ok += resp.status_code in (200, 409)
            if resp.status_code not in (200, 409):
                log.warning("enrolment of %s failed: %s %s", s.subject_id, resp.status_code, resp.text[:200])
        return ok

    async def _verify_one(self) -> None:
        s = self._rng.choice(self._subjects)
        try:
            resp = await self._http.post(f"{self._base}/v1/verify", headers=self._headers, timeout=self._timeout_s,
                                         json={"subject_id": s.subject_id, self._modality: s.probe_b64})
            self.statuses[resp.status_code] += 1
        except httpx.HTTPError as exc:  # the canary may be failing on purpose: count, keep going
            self.statuses[0] += 1
            log.debug("verify failed: %s", exc)

    async def run(self, stop: asyncio.Event, max_inflight: int = 8) -> None:
        """Send ``rate_per_s`` verifications per second until ``stop`` is set (open loop, bounded)."""
        inflight: set[asyncio.Task[None]] = set()
        period = 1.0 / self._rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while not stop.is_set():
                if len(inflight) < max_inflight:
                    task = asyncio.create_task(self._verify_one())
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                next_at += period
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_at - loop.time()))
                except TimeoutError:
                    continue
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
