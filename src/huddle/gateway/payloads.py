"""The gateway's wire shapes: client payloads checked strictly, server payloads built in one place.

Every client event carries at most one argument, a JSON object. Anything else
is `BadRequest`, with a message naming what was expected; values are never
echoed back (a token sent in the wrong field must not come back in an error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from huddle.errors import BadRequest, HuddleError, RateLimited, TokenExpired

MAX_TOKEN_LENGTH = 8192
MAX_EVENT_ID = 2**63 - 1
MAX_ROW_ID = 2**31 - 1
EXPIRED_RETRY_AFTER_MS = 2000
"""`retryAfter` of TOKEN_EXPIRED: SPEC §4.1 fixes it."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a client put in the Socket.IO handshake `auth` object."""

    token: str | None = None
    last_event_id: int | None = None
    malformed: str | None = None
    """Why part of the handshake was ignored, for an `error` event; None when fine."""


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    kind: Literal["refresh", "access"]
    value: str


def _token(value: object) -> str | None:
    """A bearer token string, `Bearer ` prefix allowed; None when absent or empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("The token must be a string.")
    value = value.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    if len(value) > MAX_TOKEN_LENGTH:
        raise BadRequest("The token is too long.")
    return value or None


def _event_id(value: object, name: str = "lastEventId") -> int:
    if type(value) is not int or not 0 <= value <= MAX_EVENT_ID:
        raise BadRequest(f"`{name}` must be a non-negative integer.")
    return value


def _body(args: tuple[Any, ...], event: str) -> dict[str, Any]:
    if len(args) != 1 or not isinstance(args[0], dict):
        raise BadRequest(f"`{event}` takes one JSON object.")
    return args[0]


def handshake(auth: object, authorization: str | None = None) -> Handshake:
    """Read `auth` ({token, lastEventId}); an `Authorization: Bearer` header may hold the token."""
    token: str | None = None
    last: int | None = None
    problems: list[str] = []
    if isinstance(auth, dict):
        try:
            token = _token(auth.get("token"))
        except BadRequest as exc:
            problems.append(exc.message)
        raw_last = auth.get("lastEventId")
        if raw_last is not None:
            try:
                last = _event_id(raw_last)
            except BadRequest as exc:
                problems.append(exc.message)
    elif auth is not None:
        problems.append("The handshake `auth` must be an object.")
    if token is None and authorization:
        try:
            token = _token(authorization) if authorization.lower().startswith("bearer ") else None
        except BadRequest:
            token = None
    return Handshake(token, last, " ".join(problems) or None)


def authenticate(args: tuple[Any, ...]) -> tuple[str, int | None]:
    """`authenticate {token, lastEventId?}`."""
    body = _body(args, "authenticate")
    token = _token(body.get("token"))
    if token is None:
        raise BadRequest("`authenticate` needs a `token`.")
    last = body.get("lastEventId")
    return token, (None if last is None else _event_id(last))


def refresh(args: tuple[Any, ...]) -> RefreshRequest:
    """`refresh_token {refreshToken}` (rotate) or `{token}` (an access token renewed elsewhere)."""
    body = _body(args, "refresh_token")
    refresh_token = _token(body.get("refreshToken"))
    access_token = _token(body.get("token"))
    if refresh_token is not None and access_token is None:
        return RefreshRequest("refresh", refresh_token)
    if access_token is not None and refresh_token is None:
        return RefreshRequest("access", access_token)
    raise BadRequest("`refresh_token` needs exactly one of `refreshToken` or `token`.")


def team_id(args: tuple[Any, ...], event: str) -> int:
    """`{teamId}` with a positive integer id."""
    value = _body(args, event).get("teamId")
    if type(value) is not int or not 1 <= value <= MAX_ROW_ID:
        raise BadRequest("`teamId` must be a positive integer.")
    return value


def last_event_id(args: tuple[Any, ...], event: str) -> int:
    """`{lastEventId}` with a non-negative integer."""
    return _event_id(_body(args, event).get("lastEventId"))


def ok(data: Any = None) -> dict[str, Any]:
    """A successful acknowledgement."""
    return {"ok": True, "data": data}


def error_body(error: HuddleError) -> dict[str, Any]:
    """`{code, message}` (and `retryAfter` for RATE_LIMITED): `error` events and failed acks."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, RateLimited):
        body["retryAfter"] = error.retry_after_ms
    return body


def failed(error: HuddleError) -> dict[str, Any]:
    """A failed acknowledgement."""
    return {"ok": False, "error": error_body(error)}


def auth_error(error: HuddleError) -> dict[str, Any]:
    """The `authentication_error` payload: `{message, code, action, retryAfter?}`."""
    if isinstance(error, TokenExpired):
        return {
            "message": TokenExpired.default_message,
            "code": error.code,
            "action": TokenExpired.action,
            "retryAfter": EXPIRED_RETRY_AFTER_MS,
        }
    body: dict[str, Any] = {
        "message": error.message,
        "code": error.code,
        "action": getattr(error, "action", "LOGIN"),
    }
    if isinstance(error, RateLimited):
        body["retryAfter"] = error.retry_after_ms
    return body
