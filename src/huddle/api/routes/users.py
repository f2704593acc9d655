"""GET /api/users/me and a user's teams and tasks (the user themself or an administrator)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from huddle.api.deps import CurrentActor, CurrentUser, Cursor, Limit, RuntimeDep
from huddle.api.lean import LeanRoute, PageRead, lean
from huddle.api.openapi import errors
from huddle.api.responses import page
from huddle.errors import NotFound
from huddle.runtime import Runtime
from huddle.schemas import Page, TaskOut, TeamOut, UserOut
from huddle.services.access import MAX_ID, Actor, require_self_or_admin

router = APIRouter(prefix="/api/users", tags=["users"], route_class=LeanRoute)

UserId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("/me", response_model=UserOut, responses=errors(401))
async def me(user: CurrentUser) -> UserOut:
    """The caller's own account."""
    return UserOut.model_validate(user)


@router.get("/{userId}/teams", response_model=Page[TeamOut], responses=errors(401, 403, 404, 422))
@lean(PageRead(path="userId", maximum=MAX_ID))
async def user_teams(
    userId: UserId,
    actor: CurrentActor,
    runtime: RuntimeDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Response:
    """The teams a user belongs to, with their role: the user themself or an administrator."""
    await _readable(actor, userId, runtime)
    teams, next_cursor = await runtime.teams.teams_of(userId, cursor=cursor, limit=limit)
    return page(teams, next_cursor)


@router.get("/{userId}/tasks", response_model=Page[TaskOut], responses=errors(401, 403, 404, 422))
@lean(PageRead(path="userId", maximum=MAX_ID))
async def user_tasks(
    userId: UserId,
    actor: CurrentActor,
    runtime: RuntimeDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Response:
    """Tasks assigned to a user in the teams they belong to: the user themself or an admin."""
    await _readable(actor, userId, runtime)
    items, next_cursor = await runtime.tasks.assigned_to(userId, cursor=cursor, limit=limit)
    return page(items, next_cursor)


async def _readable(actor: Actor, user_id: int, runtime: Runtime) -> None:
    """403 unless the caller is that user or an administrator; 404 for an unknown user."""
    require_self_or_admin(actor, user_id)
    if user_id != actor.id and not await runtime.users.exists(user_id):
        raise NotFound("User not found.")
