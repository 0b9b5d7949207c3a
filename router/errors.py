"""The router's error tree; each class carries its HTTP status and a stable snake_case code.

    RouterError (500 internal_error)
    ├── BadRequest (400 bad_request)
    │   ├── InvalidInput (400 invalid_input)       bad base64, oversized image, unknown modality
    │   ├── UnknownArm (400 unknown_arm)           pin header names an arm the route lacks
    │   └── UpstreamRejected (400 upstream_rejected) a pod refused the input (4xx)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    │   └── NotEnrolled (404 not_enrolled)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── PolicyInvalid (422 policy_invalid)
    ├── RateLimited (429 rate_limited, Retry-After)
    └── Unavailable (503 unavailable, Retry-After)
        ├── UpstreamUnavailable (503 upstream_unavailable) every backend of the chain failed
        └── NotReady (503 not_ready)

Mapped once to ``{"error": {"code", "message"}}`` in :mod:`router.app`.
"""

from __future__ import annotations


class RouterError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}


class BadRequest(RouterError):
    status = 400
    code = "bad_request"


class InvalidInput(BadRequest):
    code = "invalid_input"


class UnknownArm(BadRequest):
    code = "unknown_arm"


class UpstreamRejected(BadRequest):
    code = "upstream_rejected"


class Unauthorized(RouterError):
    status = 401
    code = "unauthorized"


class Forbidden(RouterError):
    status = 403
    code = "forbidden"


class NotFound(RouterError):
    status = 404
    code = "not_found"


class NotEnrolled(NotFound):
    code = "not_enrolled"


class PayloadTooLarge(RouterError):
    status = 413
    code = "payload_too_large"


class PolicyInvalid(RouterError):
    status = 422
    code = "policy_invalid"


class RateLimited(RouterError):
    status = 429
    code = "rate_limited"


class Unavailable(RouterError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int | None = 1) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class UpstreamUnavailable(Unavailable):
    code = "upstream_unavailable"


class NotReady(Unavailable):
    code = "not_ready"
