"""POST /api/internal/bootstrap: what many sockets start with, in one request, for gateways.

`huddle gateway` verifies each socket's token itself and then needs the user's
profile, teams and assigned tasks. Asking with the user's own token costs three
REST requests per socket; here one request carries up to `MAX_BATCH` sockets'
verified claims and the API answers each from one read
(`UserService.bootstrap_many`), applying the same admission rules as REST
authentication (`AuthService.admit`: the user exists and is active, the token
was not issued before "logout everywhere", its family was not revoked).

Request (`Authorization: Service <credential>`, see `service_caller`):

    {"sessions": [{"userId": 7, "issuedAt": 1780000000.123, "familyId": "…" | null}, …]}

Answer, one result per session in the same order:

    {"results": [{"userId": 7, "user": {…}, "teams": […], "tasks": […]}
                 | {"userId": 8, "error": {"code": "TOKEN_REVOKED", "message": …}}, …]}

The credential (`Settings.service_credential`) is accepted here and nowhere
else: user routes verify a JWT, which it never is, and this router never
consults a JWT. The router is mounted only when the process has a credential.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from huddle.api.deps import RuntimeDep
from huddle.errors import AuthError, ServiceCredentialInvalid, ServiceCredentialRequired
from huddle.gateway.sources.base import MAX_TASKS, MAX_TEAMS  # the limits both paths share
from huddle.security.tokens import MAX_USER_ID, Claims

router = APIRouter(prefix="/api/internal", tags=["internal"], include_in_schema=False)

MAX_BATCH = 100
"""Sessions one bootstrap request may carry."""

SCHEME = "service"


async def service_caller(request: Request) -> None:
    """Admit only the service credential: 403 for a user's bearer token, 401 otherwise.

    The comparison is constant-time; the credential never reaches a log (the
    `Authorization` header is never logged, and errors do not echo it).
    """
    expected: str | None = request.app.state.service_credential
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        raise ServiceCredentialRequired()
    if expected is None or scheme.lower() != SCHEME or not value:
        raise ServiceCredentialInvalid()
    if not hmac.compare_digest(value.strip().encode(), expected.encode()):
        raise ServiceCredentialInvalid()


ServiceCaller = Annotated[None, Depends(service_caller)]


class SessionIn(BaseModel):
    """The verified claims of one socket's access token."""

    model_config = ConfigDict(extra="forbid")

    userId: StrictInt = Field(ge=1, le=MAX_USER_ID)
    issuedAt: StrictFloat | StrictInt
    familyId: StrictStr | None = Field(None, max_length=128)


class BootstrapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sessions: list[SessionIn] = Field(min_length=1, max_length=MAX_BATCH)


@router.post("/bootstrap")
async def bootstrap(_: ServiceCaller, body: BootstrapIn, runtime: RuntimeDep) -> Response:
    """Each session's user, teams and assigned tasks, or why its token is refused."""
    reads = await runtime.users.bootstrap_many(
        [s.userId for s in body.sessions], max_teams=MAX_TEAMS, max_tasks=MAX_TASKS
    )
    results: list[dict[str, Any]] = []
    for session in body.sessions:
        read = reads.get(session.userId)
        claims = Claims(session.userId, float(session.issuedAt), 0.0, "", session.familyId)
        try:
            account = runtime.auth.admit(read.user if read else None, claims)
        except AuthError as exc:
            results.append({"userId": session.userId, "error": exc.to_dict()})
            continue
        assert read is not None  # admit refuses a missing user
        results.append(
            {"userId": session.userId, "user": account.wire(), "teams": read.teams,
             "tasks": read.tasks}
        )  # fmt: skip
    # The log's newest id read before the data (`UserData.head`): one read serves the
    # whole batch, and the lowest is the one true of every session's data.
    head = min((read.head for read in reads.values()), default=None)
    body_out: dict[str, Any] = {"results": results}
    if head is not None:
        body_out["head"] = head
    return Response(orjson.dumps(body_out), media_type="application/json")
