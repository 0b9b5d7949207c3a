"""What the router's OpenAPI schema adds to FastAPI's: the limits the router enforces, every status
each operation answers, how to authenticate, and the links a client follows (enrol -> verify ->
audit record, explanation). A generated client or a schema-driven fuzzer then sees what the server
does; tests/router/test_openapi_fuzz.py checks the two agree.

Applied once, to the schema FastAPI builds, by :func:`document_contract` (settings-dependent
numbers: image size, images per hash).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from router.config import RouterSettings

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_DESCRIPTIONS = {
    404: "no such resource (audit record, experiment, route) or, on /v1/verify, no template for the subject",
    409: "subject_exists: the subject is enrolled; send replace (scope enroll:replace) to replace it",
    412: "version_conflict: If-Match does not match the policy in force",
}
# Statuses beyond the common set (router.endpoints.ERRORS) per operation, and the ones that cannot occur.
EXTRA_STATUSES: dict[tuple[str, str], set[int]] = {
    ("post", "/v1/verify"): {404},
    ("post", "/v1/enroll"): {409},
    ("patch", "/admin/v1/routes/{route}/weights"): {404},
    ("get", "/v1/experiments/{name}"): {404},
    ("get", "/v1/experiments/{name}/report"): {404},
}
SECURED_PREFIXES = ("/v1/", "/admin/")


def base64_length(n_bytes: int) -> int:
    """Characters of the padded base64 text of ``n_bytes`` bytes."""
    return 4 * ((n_bytes + 2) // 3)


def _operation_ids(schema: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(method, path): op["operationId"] for path, ops in schema["paths"].items()
            for method, op in ops.items() if "operationId" in op}


def _body_schema(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def _limit_images(schema: dict[str, Any], settings: RouterSettings) -> None:
    max_length = base64_length(settings.max_image_bytes)
    for path in ("/v1/enroll", "/v1/verify"):
        props = _body_schema(schema, "post", path)["properties"]
        for modality in ("face", "fingerprint"):
            props[modality]["maxLength"] = max_length
    images = _body_schema(schema, "post", "/v1/hash")["properties"]["images"]
    images["maxItems"] = min(images.get("maxItems", settings.max_images_per_hash), settings.max_images_per_hash)
    images["items"]["maxLength"] = max_length


def _document_statuses(schema: dict[str, Any]) -> None:
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            for extra in EXTRA_STATUSES.get((method, path), set()):
                responses.setdefault(str(extra), {"description": _DESCRIPTIONS[extra],
                                                  "content": {"application/json": {"schema": ERROR_REF}}})
            for code, response in responses.items():
                if code >= "400" and "application/json" not in response.get("content", {}):
                    # Errors are JSON even where the success is a page (the experiment report).
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
            for code in ("429", "503"):
                if code in responses:
                    responses[code].setdefault("headers", _RETRY_AFTER)
            if path.startswith(SECURED_PREFIXES):
                op["security"] = [{"bearer": []}, {"apiKey": []}]


def _document_links(schema: dict[str, Any]) -> None:
    ids = _operation_ids(schema)
    audit = {"audit_id": "$response.body#/audit_id"}
    verify_ok = schema["paths"]["/v1/verify"]["post"]["responses"]["200"]
    verify_ok["links"] = {
        "GetAuditRecord": {"operationId": ids[("get", "/v1/audit/{audit_id}")], "parameters": audit,
                           "description": "the audit record of this decision"},
        "GetExplanation": {"operationId": ids[("get", "/v1/audit/{audit_id}/explanation")], "parameters": audit,
                           "description": "the explanation of this decision"},
    }
    enroll_ok = schema["paths"]["/v1/enroll"]["post"]["responses"]["200"]
    enroll_ok["links"] = {"VerifyEnrolled": {
        "operationId": ids[("post", "/v1/verify")],
        "requestBody": {"subject_id": "$response.body#/subject_id"},
        "description": "verify the subject just enrolled (its images are the client's choice)",
    }}


def document_contract(app: FastAPI, settings: RouterSettings) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _limit_images(schema, settings)
            _document_statuses(schema)
            _document_links(schema)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
