"""Users: look-ups for the API and the gateway, and what a user starts a session with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, bindparam, func, select, type_coerce

from huddle.clock import iso
from huddle.db.models import WIRE_TIME, Event, Membership, Task, Team, User
from huddle.services.unit import Database


def wire_time(column: Any) -> ColumnElement[str]:
    """A time column read as its wire form (`WireTime`)."""
    return type_coerce(column, WIRE_TIME)


_USER_COLUMNS = tuple(column.key for column in User.__table__.columns)
ACCOUNT = select(*User.__table__.columns).where(User.id == bindparam("user_id"))
# The columns of a team (with the reader's role) and of a task, in the order `team_row_wire`
# and `_task` read them; the one-user and the batch reads share them.
_TEAM_COLUMNS = (
    Team.id,
    Team.name,
    Team.description,
    wire_time(Team.created_at).label("created_at"),
    Membership.role,
)
TASK_COLUMNS = (
    Task.id,
    Task.team_id,
    Task.title,
    Task.description,
    Task.status,
    Task.priority,
    Task.assignee_id,
    wire_time(Task.due_date).label("due_date"),
    Task.created_by,
    wire_time(Task.created_at).label("created_at"),
    wire_time(Task.updated_at).label("updated_at"),
    Task.version,
)
_TEAMS = (
    select(*_TEAM_COLUMNS)
    .join(Membership, Membership.team_id == Team.id)
    .where(Membership.user_id == bindparam("user_id"))
    .order_by(Team.id)
    .limit(bindparam("limit", type_=Integer))
)
LOG_HEAD = select(func.max(Event.id))
"""The event log's newest id (NULL when empty). A cold read takes it with the account row,
in the statement before the teams' and tasks', so the data reflects at least every event
up to it (`Bootstrap.head`)."""
_HEAD_COLUMN = LOG_HEAD.scalar_subquery().label("log_head")
_ACCOUNT_AND_HEAD = ACCOUNT.add_columns(_HEAD_COLUMN)
ASSIGNED_TASKS = (
    select(*TASK_COLUMNS)
    .join(
        Membership,
        (Membership.team_id == Task.team_id) & (Membership.user_id == bindparam("user_id")),
    )
    .where(Task.assignee_id == bindparam("user_id"), Task.id > bindparam("after"))
    .order_by(Task.id)
    .limit(bindparam("limit", type_=Integer))
)
"""The tasks assigned to a user in the teams they belong to, by id, after `after`: a
socket's cold read (from 0) and a page of `GET /api/users/{id}/tasks`."""

# The same reads for a batch of users (`bootstrap_many`): `IN` over the ids, and
# each user's first `limit` teams and tasks by id picked with ROW_NUMBER().
#
# The `IN` list has one of a few fixed lengths (`_BATCH_SHAPES`; the ids padded by
# repeating the last), each length its own statement, prepared once. With a list
# as long as the batch, every batch size was new SQL to the database: SQLite's
# per-connection statement cache (128 entries) kept missing, and a miss re-plans
# these window queries (~70 µs each, three per batch, measured in the storm) —
# more than the rows cost. PostgreSQL's prepared-statement caches key on the
# text too.
_BATCH_SHAPES = (2, 4, 8, 16, 32, 64, 128)


def _batch_shape(count: int) -> int:
    """The `IN` list length a batch of `count` ids is padded to."""
    for shape in _BATCH_SHAPES:
        if count <= shape:
            return shape
    raise ValueError(f"at most {_BATCH_SHAPES[-1]} users per batch")


@dataclass(frozen=True, slots=True)
class _BatchReads:
    users: Any
    teams: Any
    tasks: Any


def _batch_reads(shape: int) -> _BatchReads:
    ids = [bindparam(f"id{i}", type_=Integer) for i in range(shape)]
    teams_ranked = (
        select(
            Membership.user_id,
            *_TEAM_COLUMNS,
            func.row_number().over(partition_by=Membership.user_id, order_by=Team.id).label("rank"),
        )
        .join(Membership, Membership.team_id == Team.id)
        .where(Membership.user_id.in_(ids))
        .subquery()
    )
    tasks_ranked = (
        select(
            *TASK_COLUMNS,
            func.row_number().over(partition_by=Task.assignee_id, order_by=Task.id).label("rank"),
        )
        .join(
            Membership,
            (Membership.team_id == Task.team_id) & (Membership.user_id == Task.assignee_id),
        )
        .where(Task.assignee_id.in_(ids))
        .subquery()
    )
    return _BatchReads(
        users=select(*User.__table__.columns, _HEAD_COLUMN).where(User.id.in_(ids)),
        teams=(
            select(*(c for c in teams_ranked.c if c.key != "rank"))
            .where(teams_ranked.c.rank <= bindparam("limit", type_=Integer))
            .order_by(teams_ranked.c.user_id, teams_ranked.c.id)
        ),
        tasks=(
            select(*(c for c in tasks_ranked.c if c.key != "rank"))
            .where(tasks_ranked.c.rank <= bindparam("limit_tasks", type_=Integer))
            .order_by(tasks_ranked.c.assignee_id, tasks_ranked.c.id)
        ),
    )


_BATCH_READS = {shape: _batch_reads(shape) for shape in _BATCH_SHAPES}


@dataclass(frozen=True, slots=True)
class Account:
    """What authenticating a request or a socket needs of a user's row, kept small: a
    process caches one per recently seen user (no ORM object, no session)."""

    id: int
    email: str
    name: str
    is_admin: bool
    is_active: bool
    sessions_revoked_at: datetime | None
    created_at: datetime

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> Account:
        """From a row of `ACCOUNT` (the `users` table's columns, in order)."""
        fields = dict(zip(_USER_COLUMNS, row, strict=True))
        return cls(
            id=fields["id"],
            email=fields["email"],
            name=fields["name"],
            is_admin=bool(fields["is_admin"]),
            is_active=bool(fields["is_active"]),
            sessions_revoked_at=fields["sessions_revoked_at"],
            created_at=fields["created_at"],
        )

    def wire(self) -> dict[str, Any]:
        """The user as `UserOut` on the wire."""
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "isAdmin": self.is_admin,
            "createdAt": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """What a user starts a session with: their row, and their teams and assigned tasks
    in wire form (`TeamOut` with the user's role, `TaskOut`), by id."""

    user: Account | None
    teams: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    head: int = 0
    """The event log's newest id, read with the account row before the teams and tasks
    (0: empty log): every event up to it is reflected in the data, so a socket starting
    from it must not be sent those events again (the gateway's relay may not have
    handled them yet)."""


class UserService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user_id: int) -> User | None:
        async with self._db.read() as session:
            return await session.get(User, user_id)

    async def exists(self, user_id: int) -> bool:
        async with self._db.read() as session:
            return (await session.scalar(select(User.id).where(User.id == user_id))) is not None

    async def bootstrap(self, user_id: int, *, max_teams: int, max_tasks: int) -> Bootstrap:
        """The user's row, teams and assigned tasks (the first `max_*` by id), in one read.

        Three plain statements on one connection (`Database.select`), the first
        also taking the log's newest id (`LOG_HEAD`), the wire form
        built from their rows: this is every cold socket authentication's read,
        and ORM objects plus schema validation cost more than the queries.
        """
        users, teams, tasks = await self._db.select(
            (_ACCOUNT_AND_HEAD, {"user_id": user_id}),
            (_TEAMS, {"user_id": user_id, "limit": max_teams}),
            (ASSIGNED_TASKS, {"user_id": user_id, "after": 0, "limit": max_tasks}),
        )
        if not users:
            return Bootstrap(None, [], [])
        *account, head = users[0]
        return Bootstrap(
            Account.of_row(tuple(account)),
            [team_row_wire(row) for row in teams],
            [task_row_wire(row) for row in tasks],
            head or 0,
        )

    async def account(self, user_id: int) -> Account | None:
        """The account of a user id (no ORM object), or None."""
        (rows,) = await self._db.select((ACCOUNT, {"user_id": user_id}))
        return Account.of_row(rows[0]) if rows else None

    async def bootstrap_many(
        self, user_ids: list[int], *, max_teams: int, max_tasks: int
    ) -> dict[int, Bootstrap]:
        """`bootstrap` for many users in one read: the same three statements over
        all the ids at once (one set of statements per batch, not per user).

        Users that do not exist are absent from the answer. Up to 128 users per
        read (more take several), the `IN` lists padded to a fixed length so
        that each shape is one prepared statement (`_BATCH_SHAPES`).
        """
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        out: dict[int, Bootstrap] = {}
        limit = _BATCH_SHAPES[-1]
        for start in range(0, len(ids), limit):
            out.update(
                await self._bootstrap_batch(ids[start : start + limit], max_teams, max_tasks)
            )
        return out

    async def _bootstrap_batch(
        self, ids: list[int], max_teams: int, max_tasks: int
    ) -> dict[int, Bootstrap]:
        shape = _batch_shape(len(ids))
        reads = _BATCH_READS[shape]
        padded = {f"id{i}": ids[min(i, len(ids) - 1)] for i in range(shape)}
        users, teams, tasks = await self._db.select(
            (reads.users, padded),
            (reads.teams, {**padded, "limit": max_teams}),
            (reads.tasks, {**padded, "limit_tasks": max_tasks}),
        )
        teams_of: dict[int, list[dict[str, Any]]] = {}
        for row in teams:
            teams_of.setdefault(row[0], []).append(team_row_wire(row[1:]))
        tasks_of: dict[int, list[dict[str, Any]]] = {}
        for row in tasks:
            tasks_of.setdefault(row[6], []).append(task_row_wire(row))
        out: dict[int, Bootstrap] = {}
        for *columns, head in users:
            account = Account.of_row(tuple(columns))
            out[account.id] = Bootstrap(
                account, teams_of.get(account.id, []), tasks_of.get(account.id, []), head or 0
            )
        return out


def team_row_wire(row: tuple[Any, ...]) -> dict[str, Any]:
    """`TeamOut` on the wire from a row of (id, name, description, created_at, role),
    the time read as `wire_time`."""
    team_id, name, description, created_at, role = row
    return {
        "id": team_id,
        "name": name,
        "description": description,
        "createdAt": created_at,
        "role": role,
    }


def task_row_wire(row: tuple[Any, ...]) -> dict[str, Any]:
    """`TaskOut` on the wire from a row of `TASK_COLUMNS` (times read as `wire_time`)."""
    (
        task_id,
        team_id,
        title,
        description,
        status,
        priority,
        assignee_id,
        due_date,
        created_by,
        created_at,
        updated_at,
        version,
    ) = row
    return {
        "id": task_id,
        "teamId": team_id,
        "title": title,
        "description": description,
        "status": status,
        "priority": priority,
        "assigneeId": assignee_id,
        "dueDate": due_date,
        "createdBy": created_by,
        "createdAt": created_at,
        "updatedAt": updated_at,
        "version": version,
    }
