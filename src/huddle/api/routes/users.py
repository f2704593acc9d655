"""GET /api/users/me and a user's teams and tasks (the user themself or an administrator)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from huddle.api.deps import CurrentActor, CurrentUser, Cursor, Limit, RuntimeDep
from huddle.errors import NotFound
from huddle.schemas import Page, TaskOut, TeamOut, UserOut
from huddle.services.access import require_self_or_admin

router = APIRouter(prefix="/api/users", tags=["users"])

UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/{userId}/teams", response_model=Page[TeamOut])
async def user_teams(
    userId: UserId,
    actor: CurrentActor,
    runtime: RuntimeDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[TeamOut]:
    require_self_or_admin(actor, userId)
    if userId != actor.id and not await runtime.users.exists(userId):
        raise NotFound("User not found.")
    teams, next_cursor = await runtime.teams.teams_of(userId, cursor=cursor, limit=limit)
    return Page[TeamOut](items=teams, nextCursor=next_cursor)


@router.get("/{userId}/tasks", response_model=Page[TaskOut])
async def user_tasks(
    userId: UserId,
    actor: CurrentActor,
    runtime: RuntimeDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[TaskOut]:
    require_self_or_admin(actor, userId)
    if userId != actor.id and not await runtime.users.exists(userId):
        raise NotFound("User not found.")
    items, next_cursor = await runtime.tasks.assigned_to(userId, cursor=cursor, limit=limit)
    return Page[TaskOut](items=items, nextCursor=next_cursor)
