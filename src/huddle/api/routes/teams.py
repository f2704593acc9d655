"""Teams and members: /api/teams, /api/teams/{teamId}, /api/teams/{teamId}/members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from huddle.api.deps import CurrentActor, Cursor, Limit, RuntimeDep
from huddle.api.lean import LeanRoute, PageRead, lean
from huddle.api.openapi import errors
from huddle.api.responses import page
from huddle.errors import ValidationFailed
from huddle.schemas import MemberIn, MemberOut, MemberPatch, Page, TeamIn, TeamOut, TeamPatch

router = APIRouter(prefix="/api/teams", tags=["teams"], route_class=LeanRoute)

TeamId = Annotated[int, Path(alias="teamId", ge=1, le=2**31 - 1)]
UserId = Annotated[int, Path(alias="userId", ge=1, le=2**31 - 1)]


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=TeamOut, responses=errors(401, 422)
)
async def create_team(body: TeamIn, actor: CurrentActor, runtime: RuntimeDep) -> TeamOut:
    """Create a team; the caller becomes its owner."""
    view = await runtime.teams.create(actor, body.name, body.description)
    return view.out()


@router.get("", response_model=Page[TeamOut], responses=errors(401, 422))
@lean(PageRead())
async def my_teams(
    actor: CurrentActor, runtime: RuntimeDep, cursor: Cursor = None, limit: Limit = 50
) -> Response:
    """The caller's teams, with the caller's role in each, by id."""
    teams, next_cursor = await runtime.teams.teams_of(actor.id, cursor=cursor, limit=limit)
    return page(teams, next_cursor)


@router.get("/{teamId}", response_model=TeamOut, responses=errors(401, 404, 422))
async def get_team(team_id: TeamId, actor: CurrentActor, runtime: RuntimeDep) -> TeamOut:
    """A team the caller belongs to (404 for any other)."""
    return (await runtime.teams.get(actor, team_id)).out()


@router.patch("/{teamId}", response_model=TeamOut, responses=errors(401, 403, 404, 422))
async def update_team(
    team_id: TeamId, body: TeamPatch, actor: CurrentActor, runtime: RuntimeDep
) -> TeamOut:
    """Rename or describe a team: its owners and admins (null leaves a field as it is)."""
    view = await runtime.teams.update(actor, team_id, name=body.name, description=body.description)
    return view.out()


@router.delete(
    "/{teamId}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 403, 404, 422)
)
async def delete_team(team_id: TeamId, actor: CurrentActor, runtime: RuntimeDep) -> Response:
    """Delete a team with its tasks: its owners only."""
    await runtime.teams.delete(actor, team_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{teamId}/members", response_model=Page[MemberOut], responses=errors(401, 404, 422))
async def members(
    team_id: TeamId,
    actor: CurrentActor,
    runtime: RuntimeDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[MemberOut]:
    """The members of a team, with their role, by user id."""
    items, next_cursor = await runtime.teams.members(actor, team_id, cursor=cursor, limit=limit)
    return Page[MemberOut](items=items, nextCursor=next_cursor)


@router.post(
    "/{teamId}/members",
    status_code=status.HTTP_201_CREATED,
    response_model=MemberOut,
    responses=errors(401, 403, 404, 409, 422),
)
async def add_member(
    team_id: TeamId, body: MemberIn, actor: CurrentActor, runtime: RuntimeDep
) -> MemberOut:
    """Add a member by the `email` they registered with: the team's owners and admins.

    An unknown address answers 404 `USER_NOT_FOUND`. Global administrators
    may send `userId` instead of `email` (from anyone else: 422).
    """
    if body.user_id is not None and not actor.is_admin:
        raise ValidationFailed(
            "Add members by `email`; `userId` is accepted from administrators only.",
            details=[{"loc": ["body", "userId"], "msg": "administrators only"}],
        )
    return await runtime.teams.add_member(
        actor, team_id, body.role.value, email=body.email, user_id=body.user_id
    )


@router.patch(
    "/{teamId}/members/{userId}",
    response_model=MemberOut,
    responses=errors(401, 403, 404, 409, 422),
)
async def update_member(
    team_id: TeamId, user_id: UserId, body: MemberPatch, actor: CurrentActor, runtime: RuntimeDep
) -> MemberOut:
    """Change a member's role: owners and admins; only owners grant or take ownership."""
    return await runtime.teams.update_member(actor, team_id, user_id, body.role.value)


@router.delete(
    "/{teamId}/members/{userId}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(401, 403, 404, 409, 422),
)
async def remove_member(
    team_id: TeamId, user_id: UserId, actor: CurrentActor, runtime: RuntimeDep
) -> Response:
    """Remove a member (owners and admins), or leave (anyone); a team keeps one owner (409)."""
    await runtime.teams.remove_member(actor, team_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
