"""The public API v1: one handler per endpoint; the POST endpoints are a table of :class:`JsonEndpoint`.

A POST endpoint (/v1/hash, /v1/verify, /v1/enroll) has exactly one body, :meth:`JsonEndpoint.respond`:
auth, parse (pydantic, straight from the body bytes), the flow call, serialisation, error mapping.
Two callers reach it: the FastAPI route registered from the table (the OpenAPI declaration, with
the request and response models; it serves when ``SERVESTACK_ROUTER_FAST_PATH=false``) and the
ASGI dispatcher of :mod:`router.fastpath`, which skips FastAPI's routing and request objects on
the hot path. Both answer the same bytes because both return what ``respond`` returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from router.deps import PIN_HEADER, ClientAuth, authenticate, caller_of
from router.errors import InvalidRequest, NotFound, RouterError, describe_validation, error_response
from router.flow import VerificationService
from router.schemas import (
    SUBJECT_PATTERN,
    AuditRecord,
    EnrollRequest,
    EnrollResponse,
    ErrorResponse,
    HashApiRequest,
    HashApiResponse,
    VerifyRequest,
)
from router.subjects import Actor

ERRORS = {
    400: {"model": ErrorResponse, "description": "bad input (base64, modality, unknown arm)"},
    401: {"model": ErrorResponse, "description": "missing or unknown API key"},
    403: {"model": ErrorResponse, "description": "the key lacks the scope (pin header: `pin`; replace: "
                                                  "`enroll:replace`)"},
    413: {"model": ErrorResponse, "description": "body or image too large"},
    422: {"model": ErrorResponse, "description": "request does not match the schema"},
    429: {"model": ErrorResponse, "description": "rate limit exceeded, or subject_locked after too many "
                                                  "rejects in a row (see Retry-After)"},
    503: {"model": ErrorResponse, "description": "no backend could serve; the message names what was tried"},
}
PIN_DOC = f"Pin header `{PIN_HEADER}: face=v2[,fingerprint=v1]` forces an arm per route."
AUDIT_ID = Path(pattern=r"^[0-9a-f]{32}$", description="audit id from /v1/verify")
SUBJECT_ID = Path(pattern=SUBJECT_PATTERN, description="the subject id given at enrolment")

api = APIRouter(responses=ERRORS)


def _json(model: BaseModel) -> Response:
    """``model`` as JSON, serialised once by pydantic (not dumped, re-validated and encoded by FastAPI)."""
    return Response(model.model_dump_json(), media_type="application/json")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@dataclass(frozen=True)
class JsonEndpoint:
    """One POST endpoint taking and answering JSON: its models, its flow call and its docs."""

    path: str
    model: type[BaseModel]
    response_model: type[BaseModel]
    call: Callable[[VerificationService, Any, Any], Awaitable[BaseModel]]
    summary: str
    description: str

    async def respond(self, state: Any, headers: Mapping[str, str], read_body: Callable[[], Awaitable[bytes]]
                      ) -> Response:
        """The endpoint's answer (errors included); ``headers`` keyed in lower case.

        The key is checked before the body is read: an unauthenticated caller gets its 401 without
        the router reading or parsing its body. Exceptions that are not the router's own propagate
        to the app's 500 handler.
        """
        try:
            principal = authenticate(state, headers, "client")
            content_type = headers.get("content-type")
            if content_type is not None and not _is_json(content_type):
                raise InvalidRequest(f"body: expected JSON (content-type application/json), got {content_type!r}")
            raw = await read_body()
            try:
                body = self.model.model_validate_json(raw)
            except ValidationError as exc:
                # loc + msg only: the offending input may be an image and must not be echoed or logged.
                raise InvalidRequest(describe_validation(exc.errors(include_url=False), ("body",))) from None
            result = await self.call(state.flow, body, caller_of(headers, principal))
        except RouterError as exc:
            return error_response(exc)
        return _json(result)

    def register(self, router: APIRouter) -> None:
        """Declare the endpoint as a FastAPI route (OpenAPI) whose body is :meth:`respond`."""

        async def route(request: Request) -> Response:
            return await self.respond(request.app.state, request.headers, request.body)

        body_schema = self.model.model_json_schema(ref_template="#/components/schemas/{model}")
        router.add_api_route(
            self.path, route, methods=["POST"], response_model=self.response_model, tags=["verification"],
            summary=self.summary, description=self.description, name=self.path.rsplit("/", 1)[-1],
            openapi_extra={"requestBody": {"required": True,
                                           "content": {"application/json": {"schema": body_schema}}}},
        )


JSON_ENDPOINTS: dict[str, JsonEndpoint] = {e.path: e for e in (
    JsonEndpoint(
        "/v1/enroll", EnrollRequest, EnrollResponse, VerificationService.enroll,
        summary="Enrol a subject (templates stored per model version)",
        description="Hashes each image on the route's chosen arm (and, by default, on every weighted arm) "
                    "and stores the code as the subject's template for the serving model version. An "
                    "enrolled subject is 409 `subject_exists` unless the body says `\"replace\": true` "
                    "(scope `enroll:replace`), which replaces every model version of the modalities sent. "
                    + PIN_DOC),
    JsonEndpoint(
        "/v1/verify", VerifyRequest, AuditRecord, VerificationService.verify,
        summary="Verify a subject: decision, distances, arm and version per modality, audit id",
        description="Hamming distance between the probe code and the template of the same model version; "
                    "fused distance = mean over modalities; accept when fused distance <= threshold. The "
                    "threshold defaults to the router's `default_threshold` (24 of 128 bits unless "
                    "configured) and may be overridden per request within 5..50. The audit record is "
                    "committed before this response is sent. After `throttle_max_rejects` rejects in a row "
                    "(default 5 within 15 minutes) the subject answers 429 `subject_locked` with Retry-After. "
                    + PIN_DOC),
    JsonEndpoint(
        "/v1/hash", HashApiRequest, HashApiResponse, VerificationService.hash,
        summary="Hash images with the policy's arm for the modality (codes returned)",
        description="`subject_id`, when given, is the sticky key; otherwise the arm is drawn at random "
                    "by weight. " + PIN_DOC),
)}
for _endpoint in JSON_ENDPOINTS.values():
    _endpoint.register(api)


@api.get("/v1/audit/{audit_id}", response_model=AuditRecord, tags=["audit"],
         summary="One audit record (of the caller's tenant)", responses={404: {"model": ErrorResponse}})
async def get_audit(request: Request, p: ClientAuth, audit_id: str = AUDIT_ID) -> Response:
    record = await request.app.state.audit_store.get(audit_id, p.tenant)
    if record is None:
        raise NotFound(f"no audit record {audit_id!r}")
    return _json(record)


@api.get("/v1/audit/{audit_id}/explanation", tags=["audit"],
         summary="Natural-language explanation of a decision (JSON, or SSE with Accept: text/event-stream)",
         description="Generated by the explainer on first request and cached with the record. With "
                     "`Accept: text/event-stream` the response is SSE: `delta` events, then one `final` "
                     "event whose `text` is the checked text to display (or `error`).",
         responses={200: {"content": {"application/json": {}, "text/event-stream": {}}},
                    404: {"model": ErrorResponse}})
async def get_explanation(request: Request, p: ClientAuth, audit_id: str = AUDIT_ID):
    service = request.app.state.explanations
    if "text/event-stream" in request.headers.get("accept", ""):
        stream = await service.open_stream(audit_id, p.tenant)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(await service.explain(audit_id, p.tenant))


@api.delete("/v1/subjects/{subject_id}", status_code=204, tags=["subjects"], response_class=Response,
            summary="Erase a subject: every template of every model version",
            description="Removes the subject's templates (all modalities, all model versions) and its throttle "
                        "state in the caller's tenant. Audit records stay: they hold decisions and distances, "
                        "never codes or images. The erasure itself is recorded as a subject event.",
            responses={204: {"description": "erased"}, 404: {"model": ErrorResponse}})
async def erase_subject(request: Request, p: ClientAuth, subject_id: str = SUBJECT_ID) -> Response:
    caller = caller_of(request.headers, p)
    await request.app.state.subjects.erase(p.tenant, subject_id, Actor(p.name, caller.trace_id))
    return Response(status_code=204)
