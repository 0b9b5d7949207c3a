"""Router settings: one typed class, read from ``SERVESTACK_ROUTER_*`` and validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The verification threshold bounds come from the biometric system (docs/ARCHITECTURE.md): a Hamming distance
# on 128-bit codes, accept when distance <= threshold, threshold configurable within 5..50.
THRESHOLD_MIN = 5.0
THRESHOLD_MAX = 50.0
# Default: 24 of 128 bits (~19 %). Seeded (untrained) hashers put two captures of one subject a
# few bits apart and unrelated subjects near 64 bits apart, so 24 sits well between the modes.
DEFAULT_THRESHOLD = 24.0


class RouterSettings(BaseSettings):
    """Settings of the router process (env prefix ``SERVESTACK_ROUTER_``).

    Verification threshold: ``default_threshold`` (default 24, in bits of Hamming distance on
    128-bit codes; fused distance = mean over modalities; accept when fused distance <= threshold).
    A request may override it within ``[5, 50]``.
    """

    model_config = SettingsConfigDict(env_prefix="SERVESTACK_ROUTER_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "INFO"
    service_version: str = "0.1.0"

    policy_source: Literal["file", "configmap"] = Field(
        "file", description="where the policy lives: policy_path, or a ConfigMap through the Kubernetes API")
    policy_path: Path | None = Field(None, description="traffic policy YAML (hot-reloaded; policy_source=file)")
    policy_poll_s: float = Field(1.0, gt=0, description="how often the policy source is checked for changes")
    policy_configmap: str = Field("router-policy", description="the policy ConfigMap (policy_source=configmap)")
    policy_configmap_key: str = Field("policy.yaml", description="its data key holding the policy YAML")
    policy_namespace: str = Field("default", description="the ConfigMap's namespace")
    kube_api_url: str | None = Field(None, description="Kubernetes API URL; default: in-cluster (service account)")
    keys_file: Path | None = Field(None, description="API keys YAML (hashed keys, tenants, scopes, rate limits; "
                                                     "hot-reloaded)")
    keys_poll_s: float = Field(1.0, gt=0, le=5, description="how often the keys file is checked for changes "
                                                            "(a revoked key is refused within this)")
    auth_disabled: bool = Field(False, description="development only: every caller gets every scope, tenant "
                                                   "'default'")
    audit_url: str = Field("sqlite:///.servestack/audit.db", description="sqlite:///path or postgresql+psycopg://...")
    audit_batch_max: int = Field(256, ge=1, description="most records committed in one group commit")

    default_threshold: float = Field(
        DEFAULT_THRESHOLD, ge=THRESHOLD_MIN, le=THRESHOLD_MAX,
        description="accept when fused Hamming distance (bits of 128) <= threshold",
    )
    migration_threshold: float | None = Field(
        None, ge=0, le=THRESHOLD_MAX,
        description="a modality's own distance must be <= this for its probe to be migrated to another arm "
                    "(default: default_threshold; a request's threshold never applies)",
    )
    throttle_max_rejects: int = Field(5, ge=1, description="rejects in a row on one subject that lock it")
    throttle_window_s: float = Field(900.0, gt=0, description="the rejects must fall within this window")
    throttle_lockout_s: float = Field(900.0, gt=0, description="how long a locked subject answers 429")

    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="largest request body accepted (413 above)")
    max_image_bytes: int = Field(4 * 1024 * 1024, gt=0, description="largest decoded image")
    max_images_per_hash: int = Field(16, ge=1, le=64)

    connect_timeout_s: float = Field(1.0, gt=0)
    upstream_try_timeout_s: float = Field(5.0, gt=0, description="per-try timeout of one hasher call")
    explainer_timeout_s: float = Field(60.0, gt=0, description="one explanation, streamed or not")
    max_retries: int = Field(2, ge=0, le=5, description="retries after the first try, each on another replica")
    retry_backoff_base_s: float = Field(0.01, ge=0, description="first retry waits ~this (jittered, doubling)")
    retry_budget_ratio: float = Field(0.2, ge=0, le=1, description="retries allowed per request, over the window")
    retry_budget_min_per_s: float = Field(5.0, ge=0, description="retries always allowed per second per backend")
    retry_budget_window_s: float = Field(10.0, gt=0)
    http_max_connections: int = Field(512, ge=1)
    fast_path: bool = Field(True, description="dispatch POST /v1/hash, /v1/verify, /v1/enroll to their "
                                              "handlers directly (router.fastpath); false: through FastAPI's "
                                              "routes (same handlers, same answers)")

    request_deadline_s: float = Field(2.0, gt=0, description="deadline of a hash/verify/enroll request without "
                                                             "X-Request-Timeout-Ms; pods get the time left")
    max_request_deadline_s: float = Field(30.0, gt=0, description="X-Request-Timeout-Ms is capped at this")
    admission_limit_per_replica: int = Field(
        8, ge=0, description="hasher calls in flight per available replica of a backend (the start of the "
                             "adaptive limit, or the fixed one); beyond the limit a call waits admission_max_wait_ms, "
                             "then 503 overloaded; 0: no admission control")
    admission_adaptive: bool = Field(True, description="adapt each backend's limit to its latency (router.admission)")
    admission_min_limit_per_replica: int = Field(4, ge=1, description="the adaptive limit never falls below "
                                                 "this: a few clients are never refused by noise")
    admission_max_limit_per_replica: int = Field(64, ge=1)
    admission_max_wait_ms: float = Field(5.0, ge=0, description="longest wait for a slot before 503 overloaded")
    outlier_consecutive_failures: int = Field(3, ge=1, description="eject a replica after this many failures in a row")
    outlier_base_ejection_s: float = Field(5.0, gt=0, description="first ejection; doubles per repeat, capped")
    outlier_max_ejection_s: float = Field(60.0, gt=0)
    health_interval_s: float = Field(2.0, gt=0, description="active readiness probe period per replica")
    health_timeout_s: float = Field(2.0, gt=0)
    health_unhealthy_threshold: int = Field(3, ge=1, description="consecutive failed probes before a replica is out")
    health_healthy_threshold: int = Field(1, ge=1, description="consecutive passed probes before it is back")
    dns_refresh_s: float = Field(5.0, gt=0, description="how often DNS backends are re-resolved")

    shadow_timeout_s: float = Field(2.0, gt=0, description="a shadow call is abandoned after this")
    shadow_max_inflight: int = Field(16, ge=1, description="shadow calls beyond this are skipped, not queued")
    template_migration: bool = Field(True, description="enrol other arms' codes after an accepted verification")
    enroll_all_arms: bool = Field(True, description="enrol on every weighted arm of a route, not only the chosen one")
    ready_requires_backends: bool = Field(True, description="/readyz needs a healthy replica per route")
    ratelimit_store: Literal["local", "database"] = Field(
        "local", description="per-key token buckets in this process, or shared by all replicas in the audit DB")
    ratelimit_lease_s: float = Field(0.1, gt=0, le=5, description="database store: a replica takes this many "
                                                                   "seconds' worth of a key's rate at a time")
    ratelimit_store_down: Literal["open", "closed"] = Field(
        "open", description="database store unreachable: open = each replica limits alone (up to R x the "
                            "limit), closed = refuse once the leased tokens are spent")
    gc_freeze: bool = Field(True, description="freeze the objects alive at start-up out of the garbage "
                                              "collector's reach (fewer, shorter collections under load)")
    gc_gen0_threshold: int = Field(10_000, ge=0, description="net new container objects between young "
                                                             "collections; 0 keeps Python's default (700)")

    @property
    def migration_threshold_bits(self) -> float:
        return self.default_threshold if self.migration_threshold is None else self.migration_threshold

    @model_validator(mode="after")
    def _check(self) -> RouterSettings:
        if self.keys_file is None and not self.auth_disabled:
            raise ValueError(
                "keys_file is required (SERVESTACK_ROUTER_KEYS_FILE); set SERVESTACK_ROUTER_AUTH_DISABLED=true "
                "to run without authentication (development only)"
            )
        if self.policy_source == "file" and self.policy_path is None:
            raise ValueError("policy_path is required (SERVESTACK_ROUTER_POLICY_PATH) with policy_source=file")
        if self.outlier_max_ejection_s < self.outlier_base_ejection_s:
            raise ValueError("outlier_max_ejection_s must be >= outlier_base_ejection_s")
        return self
