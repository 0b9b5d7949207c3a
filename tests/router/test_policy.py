"""Policy validation, split shares, stickiness, pinning, and the arm choices around a verification."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import InvalidInput, PolicyInvalid, UnknownArm
from router.policy import PolicySpec, RequestContext, TrafficPolicy, parse_pins, sticky_bucket
from router.policy_store import parse_policy
from servestack.local_config import local_stack_policy
from tests.router.support.fakes import standard_policy

INTERFACES_EXAMPLE = """
backends:
  hasher-face-v1: {endpoints: ["http://127.0.0.1:8101"], fallback: []}
  hasher-face-v2: {endpoints: ["http://127.0.0.1:8102"], fallback: [hasher-face-v1]}
  hasher-fingerprint-v1: {endpoints: ["http://127.0.0.1:8111"]}
explainer: {endpoints: ["http://127.0.0.1:8200"]}
routes:
  face:
    experiment: face-v2
    sticky_key: subject_id
    arms:
      - {name: v1, backend: hasher-face-v1, weight: 90}
      - {name: v2, backend: hasher-face-v2, weight: 10}
    shadow: {arm: v2, percent: 0}
  fingerprint:
    arms: [{name: v1, backend: hasher-fingerprint-v1, weight: 100}]
"""


def policy(v1: float, v2: float) -> TrafficPolicy:
    return TrafficPolicy(PolicySpec.model_validate(standard_policy(v1, v2)))


def test_the_interfaces_example_parses():
    spec = parse_policy(INTERFACES_EXAMPLE)
    assert [a.weight for a in spec.routes["face"].arms] == [90, 10]
    assert spec.backends["hasher-face-v2"].fallback == ["hasher-face-v1"]
    alt = yaml.safe_load(INTERFACES_EXAMPLE)
    alt["backends"]["hasher-face-v1"] = {"dns": {"name": "hasher-face-v1.ns.svc", "port": 8080}}
    alt["backends"]["hasher-face-v2"] = {"endpointslices": {"service": "hasher-face-v2", "namespace": "ns",
                                                             "port": 8080}}
    assert PolicySpec.model_validate(alt).backends["hasher-face-v1"].dns.port == 8080


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda p: p["routes"]["face"]["arms"][0].update(backend="nope"), "unknown backend"),
        (lambda p: p["backends"]["hasher-face-v2"].update(fallback=["ghost"]), "unknown backend"),
        (lambda p: p["routes"]["face"].update(shadow={"arm": "v3", "percent": 5}), "shadow arm"),
        (lambda p: [a.update(weight=0) for a in p["routes"]["face"]["arms"]], "positive weight"),
        (lambda p: p["routes"]["face"]["arms"][1].update(name="v1"), "unique"),
        (lambda p: p["backends"]["hasher-face-v1"].update(dns={"name": "x", "port": 1}), "exactly one"),
        (lambda p: p["backends"]["hasher-face-v1"].update(endpoints=["ftp://x"]), "is not an http"),
        (lambda p: p["routes"]["face"]["arms"][0].update(weight=-1), "greater than or equal"),
        (lambda p: p.update(extra=1), "Extra inputs"),
    ],
)
def test_invalid_policies_are_refused_with_the_reason(mutate, needle):
    data = standard_policy()
    mutate(data)
    with pytest.raises(PolicyInvalid, match=needle):
        parse_policy(yaml.safe_dump(data))


def test_split_share_is_within_binomial_bounds():
    p, n = policy(90, 10), 20_000
    hits = sum(p.choose(RequestContext("face", f"subject-{i}")).name == "v2" for i in range(n))
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert abs(hits - n * 0.1) < 4.5 * sigma, hits
    rng = random.Random(7)
    hits = sum(p.choose(RequestContext("face"), rng).name == "v2" for _ in range(n))  # no key: random
    assert abs(hits - n * 0.1) < 4.5 * sigma, hits


def test_same_subject_same_arm_and_bucket_is_stable():
    p = policy(50, 50)
    arms = {p.choose(RequestContext("face", "alice")).name for _ in range(20)}
    assert len(arms) == 1
    assert sticky_bucket("face-v2", "alice") == sticky_bucket("face-v2", "alice") < 10_000


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=8).map(sorted),
    subjects=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True),
)
def test_monotone_weight_moves_never_flip_a_subject_back(weights, subjects):
    """Canary weight rising step by step: once on v2 a subject stays on v2."""
    for subject in subjects:
        seen_v2 = False
        for w in weights:
            if w == 0:
                continue  # v1 100 / v2 0 keeps every subject on v1
            arm = policy(100 - w if w < 100 else 0, w).choose(RequestContext("face", subject)).name
            if seen_v2:
                assert arm == "v2", (subject, weights)
            seen_v2 = seen_v2 or arm == "v2"
        # and rolling back (weights descending) moves subjects only from v2 to v1
        seen_v1 = False
        for w in reversed([w for w in weights if 0 < w < 100]):
            arm = policy(100 - w, w).choose(RequestContext("face", subject)).name
            if seen_v1:
                assert arm == "v1"
            seen_v1 = seen_v1 or arm == "v1"


def test_pins():
    assert parse_pins("face=v2, fingerprint = v1") == {"face": "v2", "fingerprint": "v1"}
    assert parse_pins(None) == {}
    with pytest.raises(InvalidInput):
        parse_pins("face")
    p = policy(100, 0)
    arm = p.choose(RequestContext("face", "alice", {"face": "v2"}))
    assert (arm.name, arm.backend, arm.reason) == ("v2", "hasher-face-v2", "pinned")
    with pytest.raises(UnknownArm):
        p.choose(RequestContext("face", "alice", {"face": "v7"}))
    with pytest.raises(InvalidInput):
        p.choose(RequestContext("iris", "alice"))


def test_shadow_sampling_share():
    data = standard_policy(100, 0, shadow_percent=25)
    p = TrafficPolicy(PolicySpec.model_validate(data))
    rng = random.Random(3)
    primary = p.choose(RequestContext("face", "x"))
    n = 4000
    hits = sum(p.shadow_for("face", primary, rng) is not None for _ in range(n))
    assert abs(hits - n / 4) < 4.5 * math.sqrt(n * 0.25 * 0.75)
    assert p.shadow_for("face", p.arm("face", "v2")) is None  # never shadow onto the serving arm


def test_with_weights_validates():
    spec = PolicySpec.model_validate(standard_policy())
    assert TrafficPolicy(spec.with_weights("face", {"v2": 50})).weights("face") == {"v1": 90, "v2": 50}
    with pytest.raises(ValueError, match="no arm"):
        spec.with_weights("face", {"v3": 1})


def test_local_stack_policy():
    services = {"router": "http://127.0.0.1:8000", "hasher-face-v1": "http://127.0.0.1:8101",
                "hasher-face-v2": "http://127.0.0.1:8102", "hasher-fingerprint-v1": "http://127.0.0.1:8111",
                "explainer": "http://127.0.0.1:8200"}
    data = local_stack_policy(services)
    spec = PolicySpec.model_validate(data)
    face = spec.routes["face"]
    assert [(a.name, a.backend, a.weight) for a in face.arms] == [("v1", "hasher-face-v1", 90),
                                                                 ("v2", "hasher-face-v2", 10)]
    assert face.sticky_key == "subject_id"
    assert [(a.name, a.weight) for a in spec.routes["fingerprint"].arms] == [("v1", 100)]
    assert spec.explainer.endpoints == ["http://127.0.0.1:8200"]
    assert spec.backends["hasher-face-v1"].endpoints == ["http://127.0.0.1:8101"]
    no_extras = local_stack_policy({k: v for k, v in services.items() if k not in ("explainer", "hasher-face-v2")})
    assert "explainer" not in no_extras and no_extras["routes"]["face"]["arms"][0]["weight"] == 100


# --- the arm choices around a verification (versions: backend -> version it served last) --------
V1, V2 = "hasher-face-v1", "hasher-face-v2"


def _arm(p: TrafficPolicy, name: str, reason: str = "sticky"):
    return replace(p.arm("face", name), reason=reason)


def test_coverage_arm_moves_to_an_arm_whose_version_the_subject_has():
    p = policy(10, 90)
    chosen = _arm(p, "v2")
    moved = p.coverage_arm(chosen, {"1": "c"}, {V1: "1", V2: "2"})
    assert (moved.name, moved.backend, moved.reason) == ("v1", V1, "coverage")
    # Nothing to move for: the version is unknown, the subject has it, or the caller pinned the arm.
    assert p.coverage_arm(chosen, {"1": "c"}, {V1: "1"}) is chosen
    assert p.coverage_arm(chosen, {"2": "c"}, {V1: "1", V2: "2"}) is chosen
    assert p.coverage_arm(_arm(p, "v2", "pinned"), {"1": "c"}, {V1: "1", V2: "2"}).name == "v2"
    # No arm serves a version the subject has: stay.
    assert p.coverage_arm(chosen, {"3": "c"}, {V1: "1", V2: "2"}) is chosen


def test_retry_arms_skip_the_backends_already_used_and_known_misses():
    p = policy(50, 50)
    v2 = _arm(p, "v2")
    assert [(a.name, a.reason) for a in p.retry_arms(v2, V2, {"1": "c"}, {V2: "2"})] == [("v1", "coverage")]
    assert p.retry_arms(v2, V1, {"1": "c"}, {V2: "2"}) == []  # v2 fell back to v1: both backends used
    assert p.retry_arms(v2, V2, {"1": "c"}, {V1: "3", V2: "2"}) == []  # v1 serves a version it lacks
    assert p.retry_arms(_arm(p, "v2", "pinned"), V2, {"1": "c"}, {}) == []


def test_enrollment_arms_are_the_chosen_then_every_weighted_or_shadow_arm():
    p = policy(100, 0)  # v2 has no weight but is the shadow arm (standard_policy)
    v1 = _arm(p, "v1")
    assert [a.name for a in p.enrollment_arms(v1, all_arms=True)] == ["v1", "v2"]
    assert p.enrollment_arms(v1, all_arms=False) == [v1]
    spec = standard_policy(100, 0)
    del spec["routes"]["face"]["shadow"]
    unshadowed = TrafficPolicy(PolicySpec.model_validate(spec))
    assert [a.name for a in unshadowed.enrollment_arms(v1, all_arms=True)] == ["v1"]


def test_migration_arms_are_the_other_arms_whose_version_the_subject_lacks():
    p = policy(50, 50)
    assert [a.name for a in p.migration_arms("face", "v1", {"1": "c"}, {V1: "1"})] == ["v2"]  # v2 unseen
    assert [a.name for a in p.migration_arms("face", "v1", {"1": "c"}, {V1: "1", V2: "2"})] == ["v2"]
    assert p.migration_arms("face", "v1", {"1": "c", "2": "d"}, {V1: "1", V2: "2"}) == []
    assert p.migration_arms("face", "v2", {"2": "d"}, {V1: "2"}) == []  # v1 serves a version it has


def test_sticky_value_prefers_the_routes_sticky_header():
    spec = standard_policy()
    spec["routes"]["face"]["sticky_key"] = {"header": "X-Session"}
    p = TrafficPolicy(PolicySpec.model_validate(spec))
    assert p.sticky_value("face", {"x-session": "s1"}, "alice") == "s1"
    assert p.sticky_value("face", {}, "alice") == "alice"
    assert p.sticky_value("fingerprint", {"x-session": "s1"}, "alice") == "alice"
    with pytest.raises(InvalidInput, match="no route 'iris'"):
        p.sticky_value("iris", {}, None)
