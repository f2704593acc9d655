"""FastAPI dependencies as `Annotated` aliases: the runtime, the caller, paging."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer

from huddle.errors import TokenMissing
from huddle.runtime import Runtime
from huddle.security.client_ip import ClientAddress, client_address, client_ip
from huddle.services.access import CURSOR_PATTERN, Actor
from huddle.services.users import Account

# An OAuth2 password flow, so that /docs can log in with an email and password; the
# token is sent as `Authorization: Bearer <access token>` either way.
bearer_token = OAuth2PasswordBearer(
    tokenUrl="/api/auth/login",
    auto_error=False,
    description="An access token from `POST /api/auth/login` (the email goes as `username`).",
)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def _authenticated(request: Request, token: str | None) -> Account:
    if not token:
        raise TokenMissing()
    runtime: Runtime = request.app.state.runtime
    return await runtime.auth.authenticate(token)


# The caller and the actor each take the request and the token directly rather than
# through `RuntimeDep` and each other: FastAPI solves every dependency of the tree
# on every request, cached or not, and these two sit on every authenticated route.
async def get_current_user(
    request: Request, token: Annotated[str | None, Depends(bearer_token)]
) -> Account:
    return await _authenticated(request, token)


CurrentUser = Annotated[Account, Depends(get_current_user)]


async def get_actor(request: Request, token: Annotated[str | None, Depends(bearer_token)]) -> Actor:
    return Actor.of(await _authenticated(request, token))


CurrentActor = Annotated[Actor, Depends(get_actor)]


async def get_client_ip(request: Request, runtime: RuntimeDep) -> str:
    return client_ip(request.scope, runtime.settings.trusted_networks)


ClientIP = Annotated[str, Depends(get_client_ip)]


async def get_client_address(request: Request, runtime: RuntimeDep) -> ClientAddress:
    return client_address(request.scope, runtime.settings.trusted_networks)


ClientAddr = Annotated[ClientAddress, Depends(get_client_address)]

Cursor = Annotated[
    str | None,
    Query(
        pattern=CURSOR_PATTERN,
        max_length=10,
        description="`nextCursor` of the previous page (leave out for the first page)",
    ),
]
MAX_LIMIT = 100
"""The largest page a list route answers."""
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
