"""The router's error tree; each class carries its HTTP status and a stable snake_case code.

    RouterError (500 internal_error)
    ├── BadRequest (400 bad_request)
    │   ├── InvalidInput (400 invalid_input)       bad base64, oversized image, unknown modality
    │   ├── UnknownArm (400 unknown_arm)           pin header names an arm the route lacks
    │   └── UpstreamRejected (400 upstream_rejected) a pod refused the input (4xx)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    │   ├── NotEnrolled (404 not_enrolled)            no template for this modality / model version
    │   └── SubjectNotFound (404 subject_not_found)   no template at all in the caller's tenant
    ├── Conflict (409 conflict)
    │   ├── OutcomeConflict (409 outcome_conflict) a record relabelled with the other outcome
    │   └── SubjectExists (409 subject_exists)     enrolment over a subject without "replace"
    ├── PayloadTooLarge (413 payload_too_large)
    ├── InvalidRequest (422 invalid_request)   the body does not match the schema
    ├── PolicyInvalid (422 policy_invalid)
    ├── RateLimited (429 rate_limited, Retry-After)
    ├── SubjectLocked (429 subject_locked, Retry-After)   too many rejects in a row on one subject
    └── Unavailable (503 unavailable, Retry-After)
        ├── UpstreamUnavailable (503 upstream_unavailable) every backend of the chain failed
        └── NotReady (503 not_ready)

Every path answers an error through :func:`error_response` (the app's exception handlers, the
POST endpoints of :mod:`router.endpoints`, the body limit): status, ``{"error": {"code",
"message"}}`` and headers such as ``Retry-After`` come from one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every error response."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(exc: BaseException) -> Response:
    """The one mapping of an exception to the router's error response.

    :class:`RouterError` carries its status, code and headers; a schema error (pydantic's, or
    FastAPI's for a route with a declared body) is 422 ``invalid_request`` naming loc + msg only
    (the offending input may be an image: never echoed); Starlette's HTTP errors (404, 405) keep
    their status; anything else is a logged 500 that says nothing of its cause.
    """
    if isinstance(exc, RouterError):
        status, code, message, headers = exc.status, exc.code, exc.message, exc.headers()
    elif isinstance(exc, RequestValidationError):
        status, code, message, headers = 422, InvalidRequest.code, describe_validation(exc.errors()), {}
    elif isinstance(exc, ValidationError):
        status, code, headers = 422, InvalidRequest.code, {}
        message = describe_validation(exc.errors(include_url=False), ("body",))
    elif isinstance(exc, HTTPException):
        status, message, headers = exc.status_code, str(exc.detail), dict(exc.headers or {})
        code = _HTTP_CODES.get(status, "http_error")
    else:
        log.error("unhandled error", exc_info=exc)
        status, code, headers = 500, RouterError.code, {}
        message = "internal error; see the router log with this trace id"
    return Response(error_body(code, message), status_code=status, headers=headers, media_type="application/json")


def describe_validation(errors: Iterable[Mapping[str, Any]], prefix: tuple[str, ...] = ()) -> str:
    """``loc: msg`` of the first ten schema errors; never the input (it may be an image)."""
    problems = []
    for e in list(errors)[:10]:
        loc = ".".join(str(p) for p in (*prefix, *e.get("loc", ()))) or "body"
        problems.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


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


class Conflict(RouterError):
    status = 409
    code = "conflict"


class OutcomeConflict(Conflict):
    code = "outcome_conflict"


class PayloadTooLarge(RouterError):
    status = 413
    code = "payload_too_large"


class InvalidRequest(RouterError):
    status = 422
    code = "invalid_request"


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


class SubjectNotFound(NotFound):
    code = "subject_not_found"


class SubjectExists(Conflict):
    code = "subject_exists"


class SubjectLocked(RouterError):
    status = 429
    code = "subject_locked"


class VersionConflict(RouterError):
    """412 version_conflict: ``If-Match`` names a policy version that is no longer in force."""

    status = 412
    code = "version_conflict"


class ExplainerUnavailable(Unavailable):
    """No explainer endpoint is reachable at all (503 + Retry-After); any other explainer failure
    is answered with the template explanation instead."""

    code = "explainer_unavailable"

    def __init__(self, message: str, *, retry_after_s: int | None = 5) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
