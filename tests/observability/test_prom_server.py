"""PrometheusServer: a real Prometheus scrapes a real /metrics endpoint and loads our rules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.observability.monitoring_assets import RULES, rules
from tests.observability.prom_server import PrometheusServer, prometheus_binary, render_config, targets_from_services
from tests.support.procs import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus missing: apt-get install -y prometheus"),
]


@pytest.fixture
def exporter_url() -> Iterator[str]:
    """A real HTTP /metrics endpoint (prometheus_client's server) with one router-named counter."""
    registry = CollectorRegistry()
    counter = Counter("servestack_router_http_requests_total", "x", ["method", "path", "status"], registry=registry)
    counter.labels("POST", "/v1/verify", "200").inc(7)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()  # shutdown() stops serving; the listening socket closes here
    thread.join(5)


def test_render_config_groups_targets_by_job() -> None:
    cfg = render_config(
        targets_from_services({"router": "http://127.0.0.1:1", "hasher-face-v1": "http://127.0.0.1:2",
                               "hasher-face-v2": "http://127.0.0.1:3"}),
        scrape_interval_s=1,
    )
    jobs = {j["job_name"]: j["static_configs"] for j in cfg["scrape_configs"]}
    assert set(jobs) == {"servestack-router", "servestack-hasher"}
    assert jobs["servestack-hasher"] == [
        {"targets": ["127.0.0.1:2"], "labels": {"service": "hasher-face-v1"}},
        {"targets": ["127.0.0.1:3"], "labels": {"service": "hasher-face-v2"}},
    ]
    assert cfg["global"]["scrape_interval"] == "1000ms"


def test_scrapes_a_real_endpoint_and_loads_the_rules(exporter_url: str) -> None:
    with PrometheusServer(targets_from_services({"router": exporter_url}), rule_files=[RULES]) as prom:
        (target,) = prom.wait_for_targets_up(timeout_s=20)
        assert target["labels"]["job"] == "servestack-router" and target["labels"]["service"] == "router"
        (series,) = prom.wait_for(
            'servestack_router_http_requests_total{path="/v1/verify"}', lambda r: len(r) == 1, timeout_s=20
        )
        assert series["metric"]["job"] == "servestack-router" and float(series["value"][1]) == 7.0
        assert len(prom.rules()) == len(rules())
        url = prom.url
    with pytest.raises(OSError):  # stopped: nothing listens any more
        import socket

        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()
