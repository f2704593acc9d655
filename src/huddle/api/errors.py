"""The one place HuddleError and framework errors become HTTP responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from huddle.errors import DatabaseUnavailable, HuddleError, RateLimited, ValidationFailed
from huddle.logging import get_logger
from huddle.services.unit import is_unavailable

log = get_logger("huddle.api")

_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "TOKEN_MISSING",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


# FastAPI answers a JSON body its parser gave up on (nested too deeply: RecursionError)
# with this 400; it is the same mistake as malformed JSON, which is a 422.
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"
UNREADABLE_BODY = ValidationFailed(
    "The body is not valid JSON (or is nested too deeply).",
    details=[{"loc": ["body"], "msg": "unreadable JSON", "type": "json_invalid"}],
)


def _unreadable_body(exc: StarletteHTTPException) -> bool:
    return exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_ERROR


def error_response(exc: HuddleError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, -(-exc.retry_after_ms // 1000)))
    elif exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)


def _clean(errors: Any) -> list[dict[str, Any]]:
    """Validation details without the rejected input (it may be a password)."""
    cleaned = []
    for item in errors:
        cleaned.append(
            {"loc": list(item.get("loc", ())), "msg": item.get("msg"), "type": item.get("type")}
        )
    return cleaned


def install(app: FastAPI) -> None:
    @app.exception_handler(HuddleError)
    async def _huddle(_: Request, exc: HuddleError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = {
            "code": "VALIDATION_ERROR",
            "message": "The request is not valid.",
            "details": _clean(exc.errors()),
        }
        return JSONResponse({"error": body}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if _unreadable_body(exc):
            return JSONResponse({"error": UNREADABLE_BODY.to_dict()}, status_code=422)
        code = _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return JSONResponse(
            {"error": {"code": code, "message": message}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_unavailable(exc):
            log.warning("database_unavailable", error=type(exc).__name__)
            return error_response(DatabaseUnavailable())
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse(
            {"error": {"code": "INTERNAL_ERROR", "message": "Internal server error."}},
            status_code=500,
        )
