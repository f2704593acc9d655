"""Who may see and do what (SPEC §3). Invisible resources are NotFound, never Forbidden."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from huddle.db.models import Membership, Team, User
from huddle.errors import Forbidden, NotFound, ValidationFailed
from huddle.services.users import Account

MANAGERS = frozenset({"owner", "admin"})


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated caller."""

    id: int
    is_admin: bool = False

    @classmethod
    def of(cls, user: User | Account) -> Actor:
        return cls(user.id, user.is_admin)


async def role_in(session: AsyncSession, team_id: int, user_id: int) -> str | None:
    return await session.scalar(
        select(Membership.role).where(Membership.team_id == team_id, Membership.user_id == user_id)
    )


async def visible_team(
    session: AsyncSession, actor: Actor, team_id: int
) -> tuple[Team, str | None]:
    """The team and the actor's role in it; NotFound unless a member or global admin."""
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound("Team not found.")
    role = await role_in(session, team_id, actor.id)
    if role is None and not actor.is_admin:
        raise NotFound("Team not found.")
    return team, role


def require_manager(actor: Actor, role: str | None) -> None:
    """Owners and admins of the team, and global admins, manage it."""
    if not actor.is_admin and role not in MANAGERS:
        raise Forbidden("Only the team's owners and admins may do this.")


def require_self_or_admin(actor: Actor, user_id: int) -> None:
    if actor.id != user_id and not actor.is_admin:
        raise Forbidden("You may only read your own teams and tasks.")


MAX_ID = 2**31 - 1
"""The largest id of a user, team or task (INTEGER on PostgreSQL)."""

CURSOR_PATTERN = r"^(0|[1-9][0-9]{0,9})$"
"""What a cursor looks like (documented on every list route): the last id of the page.

Plain digits, so that the schema says exactly which strings are accepted: every
string it allows pages correctly, and a cursor past the last possible id
gives an empty page rather than an integer overflow in the database driver.
"""
_CURSOR = re.compile(CURSOR_PATTERN)


def plain_cursor(text: str) -> bool:
    """Whether `text` is a cursor as we make them (`CURSOR_PATTERN`, the whole string)."""
    return _CURSOR.fullmatch(text) is not None


def encode_cursor(last_id: int) -> str:
    return str(last_id)


def decode_cursor(cursor: str | None) -> int:
    """The id after which a page starts; a cursor we did not make is a validation error."""
    if not cursor:
        return 0
    if not plain_cursor(cursor):
        raise ValidationFailed("The cursor is not valid.", details=[{"loc": ["query", "cursor"]}])
    # Clamped: nothing lies after the largest id, and the driver never sees more.
    return min(int(cursor), MAX_ID)
