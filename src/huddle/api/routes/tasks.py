"""Tasks: /api/teams/{teamId}/tasks and /api/tasks/{taskId}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status

from huddle.api.deps import CurrentActor, Cursor, Limit, RuntimeDep
from huddle.api.openapi import errors
from huddle.errors import ValidationFailed
from huddle.schemas import Page, Status, TaskIn, TaskOut, TaskPatch

router = APIRouter(tags=["tasks"])

TeamId = Annotated[int, Path(alias="teamId", ge=1, le=2**31 - 1)]
TaskId = Annotated[int, Path(alias="taskId", ge=1, le=2**31 - 1)]
IF_MATCH = r'^(W/)?"?[0-9]{1,10}"?$'
"""An entity tag holding the task's version: `3`, `"3"` or `W/"3"`."""


@router.get(
    "/api/teams/{teamId}/tasks", response_model=Page[TaskOut], responses=errors(401, 404, 422)
)
async def team_tasks(
    team_id: TeamId,
    actor: CurrentActor,
    runtime: RuntimeDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    assignee_id: Annotated[int | None, Query(alias="assigneeId", ge=1, le=2**31 - 1)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[TaskOut]:
    """A team's tasks by id, optionally only one `status` or one assignee."""
    items, next_cursor = await runtime.tasks.list_team(
        actor,
        team_id,
        status=status_.value if status_ else None,
        assignee_id=assignee_id,
        cursor=cursor,
        limit=limit,
    )
    return Page[TaskOut](items=items, nextCursor=next_cursor)


@router.post(
    "/api/teams/{teamId}/tasks",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskOut,
    responses=errors(401, 404, 422),
)
async def create_task(
    team_id: TeamId, body: TaskIn, actor: CurrentActor, runtime: RuntimeDep
) -> TaskOut:
    """Create a task in a team the caller belongs to; the assignee must be a member (422)."""
    fields = body.model_dump()
    fields["status"] = body.status.value
    fields["priority"] = body.priority.value
    return await runtime.tasks.create(actor, team_id, fields)


@router.get("/api/tasks/{taskId}", response_model=TaskOut, responses=errors(401, 404, 422))
async def get_task(task_id: TaskId, actor: CurrentActor, runtime: RuntimeDep) -> TaskOut:
    """A task of a team the caller belongs to (404 for any other)."""
    return await runtime.tasks.get(actor, task_id)


@router.patch("/api/tasks/{taskId}", response_model=TaskOut, responses=errors(401, 404, 409, 422))
async def update_task(
    task_id: TaskId,
    body: TaskPatch,
    actor: CurrentActor,
    runtime: RuntimeDep,
    if_match: Annotated[
        str | None,
        Header(
            pattern=IF_MATCH,
            max_length=32,
            description='the task\'s `version` (alternative to the body field), e.g. `"3"`',
        ),
    ] = None,
) -> TaskOut:
    """Edit any field. Send the `version` you edited (body or `If-Match`) to detect conflicts:
    a stale one answers 409 `VERSION_CONFLICT` with the current task in `details.current`."""
    version = body.version
    if version is None and if_match is not None:
        try:
            version = int(if_match.strip().removeprefix("W/").strip('"'))
        except ValueError:
            raise ValidationFailed(
                "If-Match must be the task's version.", details=[{"loc": ["header", "If-Match"]}]
            ) from None
    fields = body.model_dump(exclude_unset=True, exclude={"version"})
    for key in ("title", "status", "priority", "description"):
        if key in fields and fields[key] is None:
            raise ValidationFailed(
                f"{key} may not be null.", details=[{"loc": ["body", key], "msg": "not nullable"}]
            )
    for key in ("status", "priority"):
        if key in fields:
            fields[key] = getattr(body, key).value
    return await runtime.tasks.update(actor, task_id, fields, version)


@router.delete(
    "/api/tasks/{taskId}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(401, 403, 404, 422),
)
async def delete_task(task_id: TaskId, actor: CurrentActor, runtime: RuntimeDep) -> Response:
    """Delete a task: its creator, the team's owners and admins."""
    await runtime.tasks.delete(actor, task_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
