"""Errors of the explainer pod; each says its HTTP status and code, mapped once in app.py."""

from __future__ import annotations


class ExplainerError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ExplainerError):
    """The body does not match the schema: 422 ``invalid_request``, as in every component."""

    status_code = 422
    code = "invalid_request"


class PayloadTooLarge(ExplainerError):
    status_code = 413
    code = "payload_too_large"


class NotReady(ExplainerError):
    """The engine is still loading (or failed to): 503 + Retry-After."""

    status_code = 503
    code = "not_ready"


class ImpossibleRecord(InvalidInput):
    """The record's decision contradicts its own numbers: nothing true can be said about it."""

    code = "impossible_record"
