"""A real Prometheus on 127.0.0.1 for tests: generated config, temp storage, started and stopped.

Used by tests/e2e/test_prometheus_scrape.py and by the canary tests ("Prometheus mode against a
real Prometheus scraping real router processes"):

    from tests.observability.prom_server import PrometheusServer, targets_from_services

    with PrometheusServer(targets_from_services(stack.services), scrape_interval_s=1) as prom:
        prom.wait_for_targets_up()
        series = prom.query('servestack_router_http_requests_total')

The binary comes from the Debian package `prometheus` (2.42 here). ``prometheus_binary()`` says
why it is missing so a test can skip with that reason.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import yaml

from tests.support.procs import free_port

# stack.json service name prefix -> job label; the alert rules and the dashboard use these jobs.
JOBS = (("router", "servestack-router"), ("hasher", "servestack-hasher"), ("explainer", "servestack-explainer"))


def prometheus_binary() -> str | None:
    """Path of the prometheus binary, or None (then: `apt-get install -y prometheus`)."""
    return shutil.which("prometheus")


@dataclass(frozen=True)
class ScrapeTarget:
    """One process to scrape: its base URL (``http://127.0.0.1:8000``), job and extra labels."""

    url: str
    job: str
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


def job_for(service: str) -> str:
    for prefix, job in JOBS:
        if service.startswith(prefix):
            return job
    return f"servestack-{service}"


def targets_from_services(services: Mapping[str, str]) -> list[ScrapeTarget]:
    """Targets for a stack's ``services`` (stack.json: name -> base URL), labelled ``service=<name>``."""
    return [ScrapeTarget(url=url, job=job_for(name), labels={"service": name}) for name, url in services.items()]


def render_config(
    targets: Iterable[ScrapeTarget], *, scrape_interval_s: float = 1.0, rule_files: Sequence[Path] = ()
) -> dict[str, Any]:
    """The prometheus.yml for ``targets``: one scrape job per job name, static targets."""
    interval = f"{int(scrape_interval_s * 1000)}ms"
    jobs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for t in targets:
        parts = urlsplit(t.url)
        if not parts.hostname or not parts.port:
            raise ValueError(f"target URL needs a host and a port: {t.url!r}")
        key = (t.job, parts.scheme or "http", t.metrics_path)
        jobs.setdefault(key, []).append({"targets": [f"{parts.hostname}:{parts.port}"], "labels": dict(t.labels)})
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "scheme": scheme, "metrics_path": path, "static_configs": statics}
            for (job, scheme, path), statics in jobs.items()
        ],
    }


class PrometheusServer:
    """``prometheus`` on 127.0.0.1:<free port> with a temp TSDB, scraping ``targets``.

    Args:
        targets: what to scrape (see :func:`targets_from_services`).
        scrape_interval_s: scrape and rule evaluation interval (1 s in tests).
        rule_files: rule files to load (e.g. k8s/monitoring/prometheus-rules.yaml).
        start_timeout_s: how long to wait for ``/-/ready``.
    """

    def __init__(
        self,
        targets: Iterable[ScrapeTarget],
        *,
        scrape_interval_s: float = 1.0,
        rule_files: Sequence[Path] = (),
        start_timeout_s: float = 30.0,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval_s = scrape_interval_s
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=10.0)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PrometheusServer:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus not found on PATH: apt-get install -y prometheus")
        self._dir = Path(tempfile.mkdtemp(prefix="servestack-prom-"))
        config = self._dir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                render_config(self.targets, scrape_interval_s=self.scrape_interval_s, rule_files=self.rule_files)
            )
        )
        self._log = (self._dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Nothing else should reach this instance; no console templates needed either.
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}:\n{self.log_text()}")
            try:
                if self._http.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet: retry until the deadline
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {self.start_timeout_s} s:\n{self.log_text()}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._http.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        if self._dir is None or not (self._dir / "prometheus.log").exists():
            return ""
        return (self._dir / "prometheus.log").read_text(errors="replace")[-4000:]

    # -- HTTP API ----------------------------------------------------------------------------

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        r = self._http.get(f"/api/v1/{path}", params=params)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"Prometheus API {path} {params}: {r.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {labels}, "value": [ts, "v"]}, ...]``."""
        data = self._api("query", {"query": expr})
        if data["resultType"] != "vector":
            raise ValueError(f"{expr!r} returned a {data['resultType']}, not a vector")
        return list(data["result"])

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self._api("targets", {"state": "active"})["activeTargets"])

    def metric_names(self) -> set[str]:
        return set(self._api("label/__name__/values"))

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self._api("rules")["groups"] for r in g["rules"]]

    def wait_for(
        self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll ``query(expr)`` until ``predicate(result)``; TimeoutError shows the last result."""
        deadline = time.monotonic() + timeout_s
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(min(0.5, self.scrape_interval_s))
        raise TimeoutError(f"{expr!r} after {timeout_s} s: {result}")

    def wait_for_targets_up(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout_s
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            targets = self.active_targets()
            if len(targets) == len(self.targets) and all(t["health"] == "up" for t in targets):
                return targets
            time.sleep(min(0.5, self.scrape_interval_s))
        summary = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
        raise TimeoutError(f"targets not all up after {timeout_s} s: {summary}")
