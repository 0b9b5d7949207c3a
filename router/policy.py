"""Traffic policy: the YAML model (validated at load) and every arm choice, pure.

``TrafficPolicy.choose(ctx) -> Arm`` decides which arm of a route serves a request:

1. a pin header ``X-ServeStack-Arm: face=v2`` forces an arm;
2. otherwise the sticky bucket ``hash(experiment, key) mod 10000`` is looked up in the route's
   allocation: explicit bucket ranges per arm (:mod:`router.assignment`), persisted in the
   policy as ``allocation``. A weight move from arm X to arm Y hands buckets from X to Y only,
   for any number of arms (:meth:`PolicySpec.with_weights`; a replaced policy keeps the old
   allocation through :meth:`PolicySpec.with_allocations_from`). A policy without one starts
   from contiguous ranges in arm order; one whose weights were edited by hand beside a stale
   allocation is rebalanced from it, the same way on every replica;
3. without a key (``/v1/hash`` with no subject) the bucket is random.

The other "which arm" answers live here too, as pure methods over what the router has seen
(``versions``: backend -> the model version it served last; ``templates``: the subject's codes by
model version; codes of different versions are not comparable):

- :meth:`TrafficPolicy.coverage_arm`: before hashing, another arm when the chosen one is known to
  serve a version the subject has no template for;
- :meth:`TrafficPolicy.retry_arms`: after a hash whose version has no template, the arms to try once;
- :meth:`TrafficPolicy.enrollment_arms`: the arms an enrolment writes templates for;
- :meth:`TrafficPolicy.migration_arms`: after an accepted verification, the arms whose version the
  subject lacks (the probe is hashed there and enrolled: template migration).

No I/O here: loading, watching and swapping live in :mod:`router.policy_store`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.assignment import BUCKETS, Allocation, rebalance
from router.errors import InvalidInput, UnknownArm

EXPLAINER = "explainer"  # the balancer pool name of the top-level explainer entry
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DnsSpec(_Strict):
    """A headless Service: every A record of ``name`` is a replica on ``port``."""

    name: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"


class EndpointSliceSpec(_Strict):
    """Replicas from the EndpointSlices of a Kubernetes Service (watched)."""

    service: str = Field(min_length=1, max_length=63)
    namespace: str = Field("default", min_length=1, max_length=63)
    port: int | None = Field(None, ge=1, le=65535, description="default: the slice's first port")
    scheme: Literal["http", "https"] = "http"


class BackendSpec(_Strict):
    """One backend (a model version's pods) and where to go when none of its replicas can serve."""

    endpoints: list[str] | None = None
    dns: DnsSpec | None = None
    endpointslices: EndpointSliceSpec | None = None
    fallback: list[str] = Field(default_factory=list)

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("endpoints must not be empty")
        for url in v:
            if not url.startswith(("http://", "https://")) or len(url) > 2048:
                raise ValueError(f"endpoint {url!r} is not an http(s) URL")
        return [u.rstrip("/") for u in v]

    @model_validator(mode="after")
    def _one_source(self) -> BackendSpec:
        sources = [s for s in (self.endpoints, self.dns, self.endpointslices) if s is not None]
        if len(sources) != 1:
            raise ValueError("a backend needs exactly one of endpoints, dns, endpointslices")
        return self


class StickyHeader(_Strict):
    header: str = Field(min_length=1, max_length=128)


class ArmSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    backend: str
    weight: float = Field(ge=0, le=1_000_000)


class ShadowSpec(_Strict):
    arm: str
    percent: float = Field(0, ge=0, le=100)


class RouteSpec(_Strict):
    experiment: str | None = Field(None, pattern=NAME_PATTERN)
    sticky_key: Literal["subject_id"] | StickyHeader = "subject_id"
    arms: list[ArmSpec] = Field(min_length=1, max_length=16)
    shadow: ShadowSpec | None = None
    allocation: dict[str, list[tuple[int, int]]] | None = Field(
        None, description=f"arm -> half-open sticky bucket ranges tiling [0, {BUCKETS}); written by the router")

    @model_validator(mode="after")
    def _arms(self) -> RouteSpec:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if sum(a.weight for a in self.arms) <= 0:
            raise ValueError("at least one arm needs a positive weight")
        if self.shadow is not None and self.shadow.arm not in names:
            raise ValueError(f"shadow arm {self.shadow.arm!r} is not one of the arms {names}")
        if self.allocation is not None:
            Allocation.from_spec(self.allocation)  # raises ValueError saying what is wrong
        return self

    def weights(self) -> dict[str, float]:
        return {a.name: a.weight for a in self.arms}

    def effective_allocation(self) -> Allocation:
        """The bucket ranges in force: the stored allocation (rebalanced to the weights if they were
        edited beside it, arms gone from the route handing theirs over), else contiguous ranges."""
        weights = self.weights()
        if self.allocation is None:
            return Allocation.from_weights(weights)
        stored = Allocation.from_spec(self.allocation)
        if set(stored.ranges) == set(weights) and stored.matches(weights):
            return stored
        return rebalance(stored, weights)


class PolicySpec(_Strict):
    """The whole policy file (docs/INTERFACES.md)."""

    backends: dict[str, BackendSpec] = Field(min_length=1)
    explainer: BackendSpec | None = None
    routes: dict[str, RouteSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> PolicySpec:
        for name in [*self.backends, *self.routes]:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"name {name!r} must match {NAME_PATTERN}")
        if EXPLAINER in self.backends:
            raise ValueError(f"{EXPLAINER!r} is reserved for the top-level explainer entry")
        for bname, backend in self.backends.items():
            for fb in backend.fallback:
                if fb not in self.backends:
                    raise ValueError(f"backend {bname!r} falls back to unknown backend {fb!r}")
                if fb == bname:
                    raise ValueError(f"backend {bname!r} falls back to itself")
        for rname, route in self.routes.items():
            for arm in route.arms:
                if arm.backend not in self.backends:
                    raise ValueError(f"route {rname!r} arm {arm.name!r}: unknown backend {arm.backend!r}")
        return self

    def with_weights(self, route: str, weights: Mapping[str, float]) -> PolicySpec:
        """A copy with new weights for the named arms of ``route`` (validated again)."""
        if route not in self.routes:
            raise KeyError(route)
        spec = self.routes[route]
        unknown = set(weights) - {a.name for a in spec.arms}
        if unknown:
            raise ValueError(f"route {route!r} has no arm(s) {sorted(unknown)}")
        old_weights = spec.weights()
        new_weights = {**old_weights, **{a: float(w) for a, w in weights.items()}}
        if sum(w for w in new_weights.values() if w > 0) <= 0:
            raise ValueError("at least one arm needs a positive weight")
        data = self.model_dump(mode="json", exclude_none=True)
        for arm in data["routes"][route]["arms"]:
            if arm["name"] in weights:
                arm["weight"] = weights[arm["name"]]
        moved = rebalance(spec.effective_allocation(), new_weights, old_weights)
        data["routes"][route]["allocation"] = moved.to_spec()
        return PolicySpec.model_validate(data)

    def with_allocations_from(self, old: PolicySpec) -> PolicySpec:
        """This policy, each route without an allocation of its own taking the old policy's one for the
        same route and experiment, moved to the new weights: replacing a policy keeps assignment stable."""
        data = self.model_dump(mode="json", exclude_none=True)
        changed = False
        for name, route in self.routes.items():
            before = old.routes.get(name)
            if route.allocation is not None or before is None or before.experiment != route.experiment:
                continue
            moved = rebalance(before.effective_allocation(), route.weights(), before.weights())
            data["routes"][name]["allocation"] = moved.to_spec()
            changed = True
        return PolicySpec.model_validate(data) if changed else self


Reason = Literal["pinned", "sticky", "random", "coverage"]


@dataclass(frozen=True)
class Arm:
    """The outcome of a choice: which arm and backend serve, and why."""

    route: str
    name: str
    backend: str
    reason: Reason
    bucket: int = -1


@dataclass(frozen=True)
class RequestContext:
    """What the choice may look at: the route, the sticky key's value and the pins."""

    route: str
    sticky_value: str | None = None
    pins: Mapping[str, str] = field(default_factory=dict)


def sticky_bucket(experiment: str, key: str) -> int:
    """``hash(experiment, key) mod 10000``: stable across processes and restarts (not Python's hash)."""
    digest = hashlib.blake2b(f"{experiment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def parse_pins(header: str | None) -> dict[str, str]:
    """``"face=v2, fingerprint=v1"`` -> ``{"face": "v2", "fingerprint": "v1"}``."""
    if not header:
        return {}
    pins: dict[str, str] = {}
    for item in header.split(","):
        route, sep, arm = item.strip().partition("=")
        if not sep or not route.strip() or not arm.strip():
            raise InvalidInput(f"X-ServeStack-Arm must read route=arm[,route=arm], got {header[:100]!r}")
        pins[route.strip()] = arm.strip()
    return pins


class TrafficPolicy:
    """A validated policy, compiled for choosing: immutable, swapped whole on reload."""

    def __init__(self, spec: PolicySpec, version: int = 1) -> None:
        self.spec = spec
        self.version = version
        self._allocations = {name: route.effective_allocation() for name, route in spec.routes.items()}

    def experiment(self, route: str) -> str:
        return self.spec.routes[route].experiment or route

    def sticky_header(self, route: str) -> str | None:
        key = self.spec.routes[route].sticky_key
        return key.header if isinstance(key, StickyHeader) else None

    def weights(self, route: str) -> dict[str, float]:
        return self.spec.routes[route].weights()

    def allocation(self, route: str) -> Allocation:
        return self._allocations[route]

    def sticky_value(self, route: str, headers: Mapping[str, str], subject_id: str | None) -> str | None:
        """The sticky key of a request: the route's sticky header (``headers`` keyed in lower case)
        when it has one and the request carries it, else the subject id."""
        key = self._route(route).sticky_key
        header = headers.get(key.header.lower()) if isinstance(key, StickyHeader) else None
        return header or subject_id

    def is_canary(self, route: str, arm: str) -> bool:
        """True for an arm of ``route`` other than its first (the stable arm); False when unknown."""
        spec = self.spec.routes.get(route)
        return spec is not None and arm != spec.arms[0].name and any(a.name == arm for a in spec.arms)

    def arm(self, route: str, name: str, reason: Reason = "pinned") -> Arm:
        spec = self._route(route)
        for a in spec.arms:
            if a.name == name:
                return Arm(route=route, name=a.name, backend=a.backend, reason=reason)
        raise UnknownArm(f"route {route!r} has no arm {name!r} (arms: {[a.name for a in spec.arms]})")

    def choose(self, ctx: RequestContext, rng: random.Random | None = None) -> Arm:
        """Pick the arm serving ``ctx`` (pin, else sticky bucket, else random bucket)."""
        spec = self._route(ctx.route)
        pinned = ctx.pins.get(ctx.route)
        if pinned is not None:
            return self.arm(ctx.route, pinned, "pinned")
        if ctx.sticky_value:
            bucket, reason = sticky_bucket(self.experiment(ctx.route), ctx.sticky_value), "sticky"
        else:
            bucket, reason = (rng or random).randrange(BUCKETS), "random"
        name = self._allocations[ctx.route].arm_of(bucket)
        arm = next(a for a in spec.arms if a.name == name)
        return Arm(route=ctx.route, name=arm.name, backend=arm.backend, reason=reason, bucket=bucket)

    def shadow_for(self, route: str, primary: Arm, rng: random.Random | None = None) -> Arm | None:
        """The arm to mirror this request to, or None (no shadow, not sampled, or same arm)."""
        shadow = self._route(route).shadow
        if shadow is None or shadow.percent <= 0 or shadow.arm == primary.name:
            return None
        if (rng or random).random() * 100 >= shadow.percent:
            return None
        return self.arm(route, shadow.arm, "pinned")

    def coverage_arm(self, arm: Arm, templates: Mapping[str, str], versions: Mapping[str, str]) -> Arm:
        """``arm``, or the heaviest arm known to serve a version the subject has a template for
        when ``arm`` is known to serve one it lacks (a pinned arm is never replaced)."""
        known = versions.get(arm.backend)
        if arm.reason == "pinned" or known is None or known in templates:
            return arm
        for a in sorted(self._route(arm.route).arms, key=lambda a: -a.weight):
            if versions.get(a.backend) in templates:
                return self.arm(arm.route, a.name, "coverage")
        return arm

    def retry_arms(self, arm: Arm, served_backend: str, templates: Mapping[str, str],
                   versions: Mapping[str, str]) -> list[Arm]:
        """After ``arm`` was served by ``served_backend`` in a version without a template: the other
        arms worth one try, in policy order (not those backends, nor one known to serve a version
        the subject lacks). None for a pinned arm: the caller asked for that one."""
        if arm.reason == "pinned":
            return []
        out = []
        for a in self._route(arm.route).arms:
            seen = versions.get(a.backend)
            if a.backend in (arm.backend, served_backend) or (seen is not None and seen not in templates):
                continue
            out.append(self.arm(arm.route, a.name, "coverage"))
        return out

    def enrollment_arms(self, primary: Arm, *, all_arms: bool) -> list[Arm]:
        """``primary`` first, then (``all_arms``) every other arm with weight or shadow traffic."""
        if not all_arms:
            return [primary]
        spec = self._route(primary.route)
        shadow = spec.shadow.arm if spec.shadow else None
        return [primary, *(self.arm(primary.route, a.name) for a in spec.arms
                           if a.name != primary.name and (a.weight > 0 or a.name == shadow))]

    def migration_arms(self, route: str, served_arm: str, templates: Mapping[str, str],
                       versions: Mapping[str, str]) -> list[Arm]:
        """Arms other than ``served_arm`` with weight or shadow traffic whose version is unknown or
        one the subject has no template for: where an accepted probe is worth enrolling."""
        spec = self._route(route)
        shadow = spec.shadow.arm if spec.shadow else None
        out = []
        for a in spec.arms:
            if a.name == served_arm or (a.weight <= 0 and a.name != shadow):
                continue
            seen = versions.get(a.backend)
            if seen is None or seen not in templates:
                out.append(self.arm(route, a.name))
        return out

    def _route(self, route: str) -> RouteSpec:
        try:
            return self.spec.routes[route]
        except KeyError:
            routes = sorted(self.spec.routes)
            raise InvalidInput(f"no route {route!r} in the traffic policy (routes: {routes})") from None
