"""Auth and caller info of a request: plain functions (every path calls them) and FastAPI dependencies.

The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, two
thread hops per request that cost more than everything else the router does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from opentelemetry import trace

from router.auth import Principal, Scope, presented_key
from router.flow import Caller
from router.policy import parse_pins
from tracing import current_ids

PIN_HEADER = "X-ServeStack-Arm"
_PIN = PIN_HEADER.lower()


def authenticate(state: Any, headers: Mapping[str, str], scope: Scope) -> Principal:
    """The caller's principal (``headers`` keyed in lower case); raises 401/403/429 errors.

    The one auth of every endpoint. A check of microseconds is no hop: the key's name goes on the
    request's server span (``servestack.key_name``), not on a span of its own. A pin header needs
    the ``pin`` scope wherever it is sent: refused, never silently ignored.
    """
    principal = state.authenticator.authenticate(
        presented_key(headers.get("authorization"), headers.get("x-api-key")), scope
    )
    trace.get_current_span().set_attribute("servestack.key_name", principal.name)
    if _PIN in headers:
        principal.require("pin", f"send {PIN_HEADER}")
    return principal


# The trace id of a request without a trace (OTEL_SDK_DISABLED=true): what the x-trace-id header
# says then too, and what the README promises. A made-up id would name a trace that nowhere exists.
NO_TRACE_ID = "0" * 32


def caller_of(headers: Mapping[str, str], principal: Principal) -> Caller:
    """Who calls, with pins, headers (for a sticky header) and the trace id of the current request."""
    ids = current_ids()
    return Caller(pins=parse_pins(headers.get(_PIN)), headers=headers, trace_id=ids[0] if ids else NO_TRACE_ID,
                  principal=principal)


async def client_principal(request: Request) -> Principal:
    return authenticate(request.app.state, request.headers, "client")


async def admin_principal(request: Request) -> Principal:
    return authenticate(request.app.state, request.headers, "admin")


ClientAuth = Annotated[Principal, Depends(client_principal)]
AdminAuth = Annotated[Principal, Depends(admin_principal)]
