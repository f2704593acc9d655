"""Tasks. Edits are optimistic: a stale `version` answers VERSION_CONFLICT with the task."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from huddle.clock import utcnow
from huddle.db.models import Task
from huddle.errors import Forbidden, NotFound, ValidationFailed, VersionConflict
from huddle.schemas import TaskOut, wire
from huddle.services.access import (
    MANAGERS,
    Actor,
    decode_cursor,
    encode_cursor,
    role_in,
    visible_team,
)
from huddle.services.unit import Database
from huddle.services.users import ASSIGNED_TASKS, task_row_wire

# Wire name of each editable field.
FIELDS = {
    "title": "title",
    "description": "description",
    "status": "status",
    "priority": "priority",
    "assignee_id": "assigneeId",
    "due_date": "dueDate",
}


def task_out(task: Task) -> TaskOut:
    return TaskOut.model_validate(task)


class TaskService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_team(
        self,
        actor: Actor,
        team_id: int,
        *,
        status: str | None = None,
        assignee_id: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[TaskOut], str | None]:
        after = decode_cursor(cursor)
        query = select(Task).where(Task.team_id == team_id, Task.id > after)
        if status is not None:
            query = query.where(Task.status == status)
        if assignee_id is not None:
            query = query.where(Task.assignee_id == assignee_id)
        async with self._db.read() as session:
            await visible_team(session, actor, team_id)
            rows = list(await session.scalars(query.order_by(Task.id).limit(limit + 1)))
        return _page(rows, limit)

    async def assigned_to(
        self, user_id: int, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Tasks assigned to a user across the teams they still belong to: one page in
        wire form (`TaskOut`), and the cursor of the next page or None.

        One prepared statement on a plain connection and the wire form built from
        its rows, as `TeamService.teams_of` does: no ORM objects, no validation.
        """
        after = decode_cursor(cursor)
        (rows,) = await self._db.select(
            (ASSIGNED_TASKS, {"user_id": user_id, "after": after, "limit": limit + 1})
        )
        tasks = [task_row_wire(row) for row in rows[:limit]]
        return tasks, encode_cursor(tasks[-1]["id"]) if len(rows) > limit else None

    async def create(self, actor: Actor, team_id: int, fields: dict[str, Any]) -> TaskOut:
        async with self._db.unit() as unit:
            await visible_team(unit.session, actor, team_id)
            await _check_assignee(unit.session, team_id, fields.get("assignee_id"))
            now = utcnow()
            task = Task(
                team_id=team_id,
                created_by=actor.id,
                created_at=now,
                updated_at=now,
                version=1,
                **fields,
            )
            unit.session.add(task)
            await unit.session.flush()
            out = task_out(task)
            await unit.emit(
                "task_created",
                team_id=team_id,
                actor_id=actor.id,
                body={"task": wire(out)},
            )
        return out

    async def get(self, actor: Actor, task_id: int) -> TaskOut:
        async with self._db.read() as session:
            task = await _visible_task(session, actor, task_id)
            return task_out(task)

    async def update(
        self, actor: Actor, task_id: int, fields: dict[str, Any], version: int | None
    ) -> TaskOut:
        """Apply `fields` (only those given). A stale `version` raises VersionConflict."""
        async with self._db.unit() as unit:
            task = await _visible_task(unit.session, actor, task_id)
            if version is not None and version != task.version:
                raise VersionConflict(details={"current": wire(task_out(task))})
            if "assignee_id" in fields:
                await _check_assignee(unit.session, task.team_id, fields["assignee_id"])
            changed = {k: v for k, v in fields.items() if getattr(task, k) != v}
            if not changed:
                return task_out(task)
            # The version guard in the WHERE clause closes the race between the
            # read above and this write: a concurrent edit makes it match nothing.
            result = await unit.session.execute(
                update(Task)
                .where(Task.id == task.id, Task.version == task.version)
                .values(**changed, version=task.version + 1, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                await unit.session.refresh(task)
                raise VersionConflict(details={"current": wire(task_out(task))})
            await unit.session.refresh(task)
            out = task_out(task)
            await unit.emit(
                "task_updated",
                team_id=task.team_id,
                actor_id=actor.id,
                body={"task": wire(out), "changes": [FIELDS[k] for k in changed]},
            )
        return out

    async def delete(self, actor: Actor, task_id: int) -> None:
        """The task's creator, the team's owners and admins, and global admins delete."""
        async with self._db.unit() as unit:
            task = await _visible_task(unit.session, actor, task_id)
            role = await role_in(unit.session, task.team_id, actor.id)
            if task.created_by != actor.id and role not in MANAGERS and not actor.is_admin:
                raise Forbidden("Only the task's creator or a team owner or admin may delete it.")
            team_id = task.team_id
            await unit.session.delete(task)
            await unit.emit(
                "task_deleted", team_id=team_id, actor_id=actor.id, body={"taskId": task_id}
            )


async def _visible_task(session: AsyncSession, actor: Actor, task_id: int) -> Task:
    task = await session.get(Task, task_id)
    if task is None:
        raise NotFound("Task not found.")
    if not actor.is_admin and await role_in(session, task.team_id, actor.id) is None:
        raise NotFound("Task not found.")
    return task


async def _check_assignee(session: AsyncSession, team_id: int, assignee_id: int | None) -> None:
    if assignee_id is not None and await role_in(session, team_id, assignee_id) is None:
        raise ValidationFailed(
            "The assignee must be a member of the team.",
            details=[{"loc": ["body", "assigneeId"], "msg": "not a member of the team"}],
        )


def _page(rows: list[Task], limit: int) -> tuple[list[TaskOut], str | None]:
    cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return [task_out(t) for t in rows[:limit]], cursor
