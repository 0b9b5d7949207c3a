"""Files the local stack's router reads: the traffic policy and the (hashed) API keys."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import yaml

from router.auth import ALL_SCOPES, hash_key
from router.policy import PolicySpec

LOCAL_KEYS = "local-keys.json"
LOCAL_TENANT = "local"


def local_stack_policy(services: Mapping[str, str]) -> dict:
    """The policy of ``servestack up``: face v1/v2 at 90/10 sticky by subject, fingerprint v1, explainer.

    Args:
        services: stack.json service names -> base URLs (``hasher-face-v1`` etc.).

    Returns:
        A policy dict (validated here) ready to be written as YAML.
    """
    face_v1, face_v2 = services.get("hasher-face-v1"), services.get("hasher-face-v2")
    finger = services.get("hasher-fingerprint-v1")
    backends: dict[str, dict] = {}
    routes: dict[str, dict] = {}
    if face_v1:
        # Each face version falls back to the other: templates exist for both (enrolment writes
        # every weighted arm), so a version's outage degrades to the other instead of a 503.
        backends["hasher-face-v1"] = {"endpoints": [face_v1], "fallback": ["hasher-face-v2"] if face_v2 else []}
        arms = [{"name": "v1", "backend": "hasher-face-v1", "weight": 90 if face_v2 else 100}]
        route: dict = {"experiment": "face-v2", "sticky_key": "subject_id", "arms": arms}
        if face_v2:
            backends["hasher-face-v2"] = {"endpoints": [face_v2], "fallback": ["hasher-face-v1"]}
            arms.append({"name": "v2", "backend": "hasher-face-v2", "weight": 10})
            # A tenth of v1's traffic is mirrored to v2 so that the canary analysis sees decision
            # agreement; the mirror never delays or fails the primary.
            route["shadow"] = {"arm": "v2", "percent": 10}
        routes["face"] = route
    if finger:
        backends["hasher-fingerprint-v1"] = {"endpoints": [finger], "fallback": []}
        routes["fingerprint"] = {"arms": [{"name": "v1", "backend": "hasher-fingerprint-v1", "weight": 100}]}
    policy: dict = {"backends": backends, "routes": routes}
    if services.get("explainer"):
        policy["explainer"] = {"endpoints": [services["explainer"]]}
    PolicySpec.model_validate(policy)
    return policy


def write_policy(state_dir: Path, services: dict[str, str]) -> Path:
    """Write policy.yaml for the local services (face v1/v2 at 90/10, fingerprint v1)."""
    path = state_dir / "policy.yaml"
    path.write_text(yaml.safe_dump(local_stack_policy(services), sort_keys=False))
    return path


def write_keys(state_dir: Path) -> tuple[Path, str, str]:
    """Create (once) a client and an admin key; the router gets only their hashes.

    The plaintext keys stay in STATE_DIR/local-keys.json (mode 0600) so that they are stable
    across restarts of the local stack: a pasted curl keeps working.

    Returns:
        (keys.yaml path, client key, admin key)
    """
    plain_path = state_dir / LOCAL_KEYS
    if plain_path.exists():
        plain = json.loads(plain_path.read_text())
    else:
        plain = {"api_key": "sk-local-" + secrets.token_urlsafe(18),
                 "admin_api_key": "sk-admin-" + secrets.token_urlsafe(18)}
        fd = os.open(plain_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(plain, fh)
    keys = {
        "keys": [
            # Generous limits: the local stack is also the target of `servestack loadtest`.
            # One tenant; the client key may not pin arms, the admin key holds every scope.
            {"name": "local-client", "tenant": LOCAL_TENANT, "sha256": hash_key(plain["api_key"]),
             "scopes": ["client"], "rate_per_s": 5000, "burst": 10000},
            {"name": "local-admin", "tenant": LOCAL_TENANT, "sha256": hash_key(plain["admin_api_key"]),
             "scopes": list(ALL_SCOPES), "rate_per_s": 100, "burst": 200},
        ]
    }
    path = state_dir / "keys.yaml"
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path, plain["api_key"], plain["admin_api_key"]
