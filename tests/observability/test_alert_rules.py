"""The alert rules and the local scrape config pass promtool (Debian package `prometheus`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.monitoring_assets import LOCAL_CONFIG, RULE_TESTS, RULES, rules

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: apt-get install -y prometheus")


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_check_rules() -> None:
    out = _promtool("check", "rules", RULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    out = _promtool("test", "rules", RULE_TESTS)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_every_alert_has_a_unit_test() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    tested = {
        case["alertname"]
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a firing case, not only a quiet one
    }
    assert alerts == tested, f"alerts without a firing test: {sorted(alerts - tested)}"


@needs_promtool
def test_a_broken_expectation_fails(tmp_path: Path) -> None:
    """The rule tests can fail: move one threshold past the test data and promtool must say so."""
    broken = tmp_path / "prometheus-rules.yaml"
    broken.write_text(RULES.read_text().replace("> 48", "> 600"))
    tests = tmp_path / "tests.yaml"
    tests.write_text(RULE_TESTS.read_text())
    out = _promtool("test", "rules", tests)
    assert out.returncode != 0 and "ServeStackHasherQueueSaturated" in out.stdout + out.stderr


@needs_promtool
def test_local_scrape_config_is_valid() -> None:
    out = _promtool("check", "config", LOCAL_CONFIG)
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert jobs == {"servestack-router", "servestack-hasher", "servestack-explainer"}
    # Same default ports as `servestack up` (docs/INTERFACES.md, Processes).
    targets = {t for j in config["scrape_configs"] for s in j["static_configs"] for t in s["targets"]}
    assert targets == {f"127.0.0.1:{p}" for p in (8000, 8101, 8102, 8111, 8200)}
