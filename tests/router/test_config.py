"""router.config: settings refuse unsafe defaults."""

from __future__ import annotations

from router.config import RouterSettings


def test_settings_refuse_unsafe_defaults(monkeypatch, tmp_path):
    import pytest
    from pydantic import ValidationError

    monkeypatch.setenv("SERVESTACK_ROUTER_POLICY_PATH", str(tmp_path / "p.yaml"))
    with pytest.raises(ValidationError, match="keys_file is required"):
        RouterSettings()
    monkeypatch.setenv("SERVESTACK_ROUTER_AUTH_DISABLED", "true")
    monkeypatch.setenv("SERVESTACK_ROUTER_DEFAULT_THRESHOLD", "30")
    assert RouterSettings().default_threshold == 30
    monkeypatch.setenv("SERVESTACK_ROUTER_DEFAULT_THRESHOLD", "60")
    with pytest.raises(ValidationError):
        RouterSettings()
