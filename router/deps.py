"""FastAPI dependencies shared by the endpoint modules: auth and caller info.

All ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, two thread hops per
request that cost more than everything else the router does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from router.auth import Principal, Scope, presented_key
from router.flow import Caller
from router.ids import new_id
from router.policy import parse_pins
from tracing import current_ids, traced

PIN_HEADER = "X-ServeStack-Arm"


def _authenticate(request: Request, scope: Scope) -> Principal:
    state = request.app.state
    with traced(state.telemetry.tracer, "auth", {"servestack.scope": scope}) as span:
        principal = state.authenticator.authenticate(
            presented_key(request.headers.get("authorization"), request.headers.get("x-api-key")), scope
        )
        span.set_attribute("servestack.key_name", principal.name)
    return principal


async def client_principal(request: Request) -> Principal:
    return _authenticate(request, "client")


async def admin_principal(request: Request) -> Principal:
    return _authenticate(request, "admin")


async def caller(request: Request) -> Caller:
    ids = current_ids()
    return Caller(
        pins=parse_pins(request.headers.get(PIN_HEADER)),
        headers=request.headers,
        trace_id=ids[0] if ids else new_id(),
    )


ClientAuth = Annotated[Principal, Depends(client_principal)]
AdminAuth = Annotated[Principal, Depends(admin_principal)]
CallerDep = Annotated[Caller, Depends(caller)]
