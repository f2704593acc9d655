"""POST /api/auth/*: register, login (JSON or OAuth2 form), refresh, logout, logout-all."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import ValidationError

from huddle.api.deps import ClientIP, CurrentUser, RuntimeDep
from huddle.api.errors import UNREADABLE_BODY
from huddle.api.openapi import errors
from huddle.errors import InvalidCredentials, ValidationFailed
from huddle.schemas import (
    LoginIn,
    PasswordChangeIn,
    RefreshIn,
    RegisterIn,
    TokenPair,
    UserOut,
)
from huddle.services.auth import Session

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _pair(session: Session) -> TokenPair:
    return TokenPair(
        access_token=session.access_token,
        refresh_token=session.refresh_token,
        expires_in=session.expires_in,
    )


async def _login_body(request: Request) -> LoginIn:
    """JSON `{email, password}`, or the OAuth2 password form (`username`, `password`)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            data: Any = {"email": form.get("username"), "password": form.get("password")}
        else:
            data = await request.json()
        return LoginIn.model_validate(data)
    except ValidationError as exc:
        details = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        raise ValidationFailed(details=details) from None
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        raise ValidationFailed(UNREADABLE_BODY.message, details=UNREADABLE_BODY.details) from None


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=errors(409, 422),
)
async def register(body: RegisterIn, runtime: RuntimeDep) -> UserOut:
    """Create an account. The email is compared case-insensitively (409 `EMAIL_TAKEN`)."""
    user = await runtime.auth.register(str(body.email), body.password, body.name)
    return UserOut.model_validate(user)


@router.post(
    "/login",
    response_model=TokenPair,
    responses=errors(401, 422, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": LoginIn.model_json_schema(by_alias=True)},
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["username", "password"],
                        "properties": {
                            "username": {"type": "string", "description": "email"},
                            "password": {"type": "string", "format": "password"},
                        },
                    }
                },
            },
        }
    },
)
async def login(request: Request, runtime: RuntimeDep, ip: ClientIP) -> TokenPair:
    """Log in with JSON `{email, password}` or the OAuth2 password form (`username`).

    A wrong email or password answers 401 `INVALID_CREDENTIALS`; failures are
    limited per address and account (429 `RATE_LIMITED`, SPEC §5).
    """
    body = await _login_body(request)
    limiter = runtime.login_limiter
    await limiter.check(ip, body.email)
    try:
        session = await runtime.auth.login(body.email, body.password)
    except InvalidCredentials:
        await limiter.record_failure(ip, body.email)
        raise
    return _pair(session)


@router.post("/refresh", response_model=TokenPair, responses=errors(401, 422))
async def refresh(body: RefreshIn, runtime: RuntimeDep) -> TokenPair:
    """Redeem a refresh token once for a new pair of the same family.

    A token presented again after REFRESH_REUSE_GRACE revokes its family
    (401 `REFRESH_TOKEN_REUSED`); within it, it gets another pair.
    """
    return _pair(await runtime.auth.refresh(body.refresh_token))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 422))
async def logout(body: RefreshIn, runtime: RuntimeDep) -> Response:
    """Revoke the refresh token's family; its access tokens stop working at once."""
    await runtime.auth.logout(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401))
async def logout_all(user: CurrentUser, runtime: RuntimeDep) -> Response:
    """Revoke every session of the caller: refresh families and earlier access tokens."""
    await runtime.auth.logout_all(user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 422, 429))
async def change_password(
    body: PasswordChangeIn, user: CurrentUser, runtime: RuntimeDep, ip: ClientIP
) -> Response:
    """Change the password; every existing session is revoked (log in again).

    A wrong current password counts as a failed login for the account (SPEC §5):
    a stolen access token must not become a way around the login limit.
    """
    limiter = runtime.login_limiter
    await limiter.check(ip, user.email)
    try:
        await runtime.auth.change_password(user.id, body.current_password, body.new_password)
    except InvalidCredentials:
        await limiter.record_failure(ip, user.email)
        raise
    return Response(status_code=status.HTTP_204_NO_CONTENT)
