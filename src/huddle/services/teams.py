"""Teams and their members. Every change writes its outbox event in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from huddle.db.models import Membership, Team, User
from huddle.errors import Conflict, Forbidden, NotFound, UserNotFound
from huddle.schemas import MemberOut, TeamOut, UserOut, wire
from huddle.services.access import (
    Actor,
    decode_cursor,
    encode_cursor,
    require_manager,
    role_in,
    visible_team,
)
from huddle.services.auth import normalize_email
from huddle.services.unit import Database
from huddle.services.users import team_row_wire, wire_time

_TEAMS_PAGE = (
    select(Team.id, Team.name, Team.description, wire_time(Team.created_at), Membership.role)
    .join(Membership, Membership.team_id == Team.id)
    .where(Membership.user_id == bindparam("user_id"), Team.id > bindparam("after"))
    .order_by(Team.id)
    .limit(bindparam("limit", type_=Integer))
)
"""A page of a user's teams (`teams_of`): the columns of `TeamOut`, by team id."""


@dataclass(frozen=True, slots=True)
class TeamView:
    team: Team
    role: str | None

    def out(self) -> TeamOut:
        return TeamOut.model_validate(
            {
                "id": self.team.id,
                "name": self.team.name,
                "description": self.team.description,
                "created_at": self.team.created_at,
                "role": self.role,
            }
        )


def member_out(membership: Membership, user: User) -> MemberOut:
    return MemberOut.model_validate(
        {
            "team_id": membership.team_id,
            "user_id": membership.user_id,
            "role": membership.role,
            "user": UserOut.model_validate(user),
            "joined_at": membership.created_at,
        }
    )


def team_wire(team: Team) -> dict[str, object]:
    """A team as events carry it: no `role`, which depends on the reader."""
    data = wire(TeamView(team, None).out())
    data.pop("role", None)
    return data


class TeamService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, actor: Actor, name: str, description: str) -> TeamView:
        async with self._db.unit() as unit:
            team = Team(name=name, description=description, created_by=actor.id)
            unit.session.add(team)
            await unit.session.flush()
            unit.session.add(Membership(team_id=team.id, user_id=actor.id, role="owner"))
            await unit.session.flush()
            user = await unit.session.get(User, actor.id)
            if user is None:
                raise NotFound("User not found.")
            membership = await unit.session.get(Membership, (team.id, actor.id))
            assert membership is not None
            await unit.emit(
                "member_added",
                team_id=team.id,
                actor_id=actor.id,
                subject_user_id=actor.id,
                body={"user": wire(UserOut.model_validate(user)), "role": "owner"},
            )
        return TeamView(team, "owner")

    async def teams_of(
        self, user_id: int, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The teams a user belongs to, with their role, by team id: one page in wire
        form (`TeamOut`), and the cursor of the next page or None.

        One prepared statement on a plain connection (`Database.select`) and the
        wire form built from its rows: this is the REST API's busiest read, and an
        ORM session, a statement built per call and schema validation cost several
        times the query.
        """
        after = decode_cursor(cursor)
        (rows,) = await self._db.select(
            (_TEAMS_PAGE, {"user_id": user_id, "after": after, "limit": limit + 1})
        )
        teams = [team_row_wire(row) for row in rows[:limit]]
        return teams, encode_cursor(teams[-1]["id"]) if len(rows) > limit else None

    async def get(self, actor: Actor, team_id: int) -> TeamView:
        async with self._db.read() as session:
            team, role = await visible_team(session, actor, team_id)
        return TeamView(team, role)

    async def update(
        self, actor: Actor, team_id: int, *, name: str | None, description: str | None
    ) -> TeamView:
        async with self._db.unit() as unit:
            team, role = await visible_team(unit.session, actor, team_id)
            require_manager(actor, role)
            changes = []
            if name is not None and name != team.name:
                team.name = name
                changes.append("name")
            if description is not None and description != team.description:
                team.description = description
                changes.append("description")
            if changes:
                await unit.session.flush()
                await unit.emit(
                    "team_updated",
                    team_id=team.id,
                    actor_id=actor.id,
                    body={"team": team_wire(team), "changes": changes},
                )
        return TeamView(team, role)

    async def delete(self, actor: Actor, team_id: int) -> None:
        """Owners (and global admins) delete a team; members learn it by `team_deleted`."""
        async with self._db.unit() as unit:
            team, role = await visible_team(unit.session, actor, team_id)
            if role != "owner" and not actor.is_admin:
                raise Forbidden("Only the team's owners may delete it.")
            await unit.emit("team_deleted", team_id=team.id, actor_id=actor.id, body={})
            await unit.session.delete(team)

    async def members(
        self, actor: Actor, team_id: int, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[MemberOut], str | None]:
        after = decode_cursor(cursor)
        async with self._db.read() as session:
            await visible_team(session, actor, team_id)
            rows = (
                await session.execute(
                    select(Membership, User)
                    .join(User, User.id == Membership.user_id)
                    .where(Membership.team_id == team_id, Membership.user_id > after)
                    .order_by(Membership.user_id)
                    .limit(limit + 1)
                )
            ).all()
        items = [member_out(m, u) for m, u in rows]
        if len(items) > limit:
            return items[:limit], encode_cursor(items[limit - 1].user_id)
        return items, None

    async def add_member(
        self,
        actor: Actor,
        team_id: int,
        role: str,
        *,
        email: str | None = None,
        user_id: int | None = None,
    ) -> MemberOut:
        """Add the user with `email` (compared case-insensitively) or, for callers
        the route let through, with `user_id`; USER_NOT_FOUND when there is none."""
        async with self._db.unit() as unit:
            _, my_role = await visible_team(unit.session, actor, team_id)
            require_manager(actor, my_role)
            if role == "owner" and my_role != "owner" and not actor.is_admin:
                raise Forbidden("Only owners may add another owner.")
            if email is not None:
                user = await unit.session.scalar(
                    select(User).where(User.email == normalize_email(email))
                )
            else:
                user = None if user_id is None else await unit.session.get(User, user_id)
            if user is None or not user.is_active:
                raise UserNotFound()
            user_id = user.id
            if await role_in(unit.session, team_id, user_id) is not None:
                raise Conflict("The user is already a member of this team.")
            membership = Membership(team_id=team_id, user_id=user_id, role=role)
            unit.session.add(membership)
            await unit.session.flush()
            out = member_out(membership, user)
            await unit.emit(
                "member_added",
                team_id=team_id,
                actor_id=actor.id,
                subject_user_id=user_id,
                body={"user": wire(out.user), "role": role},
            )
        return out

    async def update_member(self, actor: Actor, team_id: int, user_id: int, role: str) -> MemberOut:
        async with self._db.unit() as unit:
            _, my_role = await visible_team(unit.session, actor, team_id)
            require_manager(actor, my_role)
            membership = await unit.session.get(Membership, (team_id, user_id))
            if membership is None:
                raise NotFound("Member not found.")
            touches_owner = "owner" in (role, membership.role)
            if touches_owner and my_role != "owner" and not actor.is_admin:
                raise Forbidden("Only owners may grant or take away ownership.")
            if membership.role == "owner" and role != "owner":
                await self._keep_an_owner(unit.session, team_id)
            user = await unit.session.get(User, user_id)
            assert user is not None  # the membership's foreign key
            if membership.role != role:
                membership.role = role
                await unit.session.flush()
                await unit.emit(
                    "member_updated",
                    team_id=team_id,
                    actor_id=actor.id,
                    subject_user_id=user_id,
                    body={"userId": user_id, "role": role},
                )
            out = member_out(membership, user)
        return out

    async def remove_member(self, actor: Actor, team_id: int, user_id: int) -> None:
        """Managers remove members; any member may leave. A team keeps at least one owner."""
        async with self._db.unit() as unit:
            _, my_role = await visible_team(unit.session, actor, team_id)
            if user_id != actor.id:
                require_manager(actor, my_role)
            membership = await unit.session.get(Membership, (team_id, user_id))
            if membership is None:
                raise NotFound("Member not found.")
            if membership.role == "owner":
                if user_id != actor.id and my_role != "owner" and not actor.is_admin:
                    raise Forbidden("Only owners may remove an owner.")
                await self._keep_an_owner(unit.session, team_id)
            role = membership.role
            await unit.session.delete(membership)
            await unit.emit(
                "member_removed",
                team_id=team_id,
                actor_id=actor.id,
                subject_user_id=user_id,
                body={"userId": user_id, "role": role},
            )

    async def _keep_an_owner(self, session: AsyncSession, team_id: int) -> None:
        owners = await session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.team_id == team_id, Membership.role == "owner")
        )
        if (owners or 0) <= 1:
            raise Conflict("A team must keep at least one owner.")
