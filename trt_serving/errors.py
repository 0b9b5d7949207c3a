"""The hasher pod's error tree: each class carries its HTTP status and a snake_case code.

Mapped to ``{"error": {"code", "message"}}`` once, in ``app.py`` (KServe's errors.py pattern).
"""

from __future__ import annotations


class HasherError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(HasherError):
    """The request is malformed (400)."""

    status = 400
    code = "invalid_input"


class InvalidImage(InvalidInput):
    """One image cannot be used: not an image, truncated, too large, zero size, wrong mode."""

    def __init__(self, code: str, message: str):
        super().__init__(message, code=code)


class ModelNotFound(HasherError):
    status = 404
    code = "model_not_found"


class Overloaded(HasherError):
    """The batch queue is full (503 + Retry-After)."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class NotReady(Overloaded):
    status = 503
    code = "not_ready"


class DeadlineExceeded(HasherError):
    """The request waited past its deadline before its batch ran (504)."""

    status = 504
    code = "deadline_exceeded"
