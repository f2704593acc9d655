"""What `/openapi.json` says beyond what FastAPI infers: the error body and every status.

Every error Huddle answers has one shape, `{"error": {code, message, details?}}`
(`huddle.api.errors`). It is the `Error` component here, and each route lists
the statuses it can answer with it (`errors(...)`), instead of FastAPI's
`{"detail": [...]}` 422 (`HTTPValidationError`), which Huddle never sends.

`finish_schema` then adds what holds for every operation alike: 413 (any
request may carry a body above MAX_BODY) and, under `/api`, 503 (the database
is unreachable), and drops FastAPI's validation components if anything still
refers to them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from huddle.schemas import Error, ErrorInfo

__all__ = ["DESCRIPTIONS", "Error", "ErrorInfo", "errors", "finish_schema"]

DESCRIPTIONS: dict[int, str] = {
    400: "The request is malformed (`BAD_REQUEST`).",
    401: (
        "Not authenticated: `TOKEN_MISSING`, `TOKEN_EXPIRED`, `TOKEN_INVALID`, `TOKEN_REVOKED`; "
        "on the auth routes `INVALID_CREDENTIALS` or `REFRESH_TOKEN_EXPIRED`, "
        "`REFRESH_TOKEN_INVALID`, `REFRESH_TOKEN_REUSED`."
    ),
    403: "Known but not allowed (`FORBIDDEN`).",
    404: "No such resource, or not one the caller may see (`NOT_FOUND`, `USER_NOT_FOUND`).",
    409: "Conflicts with the current state (`EMAIL_TAKEN`, `VERSION_CONFLICT`, `CONFLICT`).",
    413: "The request body is larger than MAX_BODY (`PAYLOAD_TOO_LARGE`).",
    422: "The request does not match the schema (`VALIDATION_ERROR`; `details` says where).",
    429: "Too many failed attempts (`RATE_LIMITED`); `Retry-After` says when to try again.",
    503: "The database is unreachable (`DATABASE_UNAVAILABLE`); try again shortly.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the error body and its meaning."""
    return {status: {"model": Error, "description": DESCRIPTIONS[status]} for status in statuses}


_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")
_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})


def _not_null(parameter: dict[str, Any]) -> None:
    """An optional query or header parameter is left out, never null (HTTP has no null):
    FastAPI's `anyOf: [X, {type: null}]` for `X | None` becomes X."""
    schema = parameter.get("schema", {})
    choices = schema.get("anyOf")
    if not isinstance(choices, list):
        return
    kept = [choice for choice in choices if choice != {"type": "null"}]
    if len(kept) == 1 and len(kept) < len(choices):
        del schema["anyOf"]
        schema.update(kept[0])


def _integral_bounds(node: Any) -> None:
    """`"minimum": 1` rather than FastAPI's `1.0`: ids are integers, and a float bound
    invites clients (and schemathesis) to send `1.0`, which Huddle refuses."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            else:
                _integral_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _integral_bounds(item)


_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def finish_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of `app`, built once (FastAPI's `app.openapi` replacement)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                _not_null(parameter)
            responses = operation.setdefault("responses", {})
            wanted = [413, 503] if path.startswith("/api/") else [413]
            for status in wanted:
                responses.setdefault(
                    str(status),
                    {
                        "description": DESCRIPTIONS[status],
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    },
                )
    _integral_bounds(schema)
    components = schema.get("components", {}).get("schemas", {})
    text = str(schema.get("paths"))
    for name in _FASTAPI_VALIDATION:
        if f"/{name}'" not in text:
            components.pop(name, None)
    app.openapi_schema = schema
    return schema
