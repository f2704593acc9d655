"""Tasks and teams: CRUD, filters, cursor pages, optimistic concurrency, bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.factories import Factory


async def test_task_lifecycle_and_version_conflict(factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    task = await factory.task(team["id"], owner, description="first", priority="high")
    assert task["version"] == 1 and task["status"] == "todo" and task["priority"] == "high"
    assert set(task) == {
        "id",
        "teamId",
        "title",
        "description",
        "status",
        "priority",
        "assigneeId",
        "dueDate",
        "createdBy",
        "createdAt",
        "updatedAt",
        "version",
    }
    client = factory.client
    path = f"/api/tasks/{task['id']}"
    edited = await client.patch(
        path, json={"status": "in_progress", "version": 1}, headers=owner.headers
    )
    assert edited.status_code == 200
    assert edited.json()["version"] == 2 and edited.json()["status"] == "in_progress"

    stale = await client.patch(path, json={"title": "lost?", "version": 1}, headers=owner.headers)
    assert stale.status_code == 409
    error = stale.json()["error"]
    assert error["code"] == "VERSION_CONFLICT"
    assert error["details"]["current"]["version"] == 2
    assert error["details"]["current"]["title"] == task["title"]

    by_header = await client.patch(
        path, json={"title": "via If-Match"}, headers={**owner.headers, "If-Match": '"2"'}
    )
    assert by_header.status_code == 200 and by_header.json()["version"] == 3
    stale_header = await client.patch(
        path, json={"title": "again"}, headers={**owner.headers, "If-Match": "2"}
    )
    assert stale_header.status_code == 409

    assert (await client.delete(path, headers=owner.headers)).status_code == 204
    assert (await client.get(path, headers=owner.headers)).status_code == 404


async def test_filters_and_cursor_pagination(factory: Factory) -> None:
    owner = await factory.user()
    mate = await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, mate)
    made = [
        await factory.task(
            team["id"],
            owner,
            status="done" if i % 2 else "todo",
            assigneeId=mate.id if i % 3 == 0 else None,
        )
        for i in range(7)
    ]
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (
            await factory.client.get(
                f"/api/teams/{team['id']}/tasks", params=params, headers=owner.headers
            )
        ).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [t["id"] for t in made]

    done = (
        await factory.client.get(
            f"/api/teams/{team['id']}/tasks", params={"status": "done"}, headers=owner.headers
        )
    ).json()["items"]
    assert [t["id"] for t in done] == [t["id"] for t in made if t["status"] == "done"]
    mine = (
        await factory.client.get(
            f"/api/teams/{team['id']}/tasks", params={"assigneeId": mate.id}, headers=owner.headers
        )
    ).json()["items"]
    assert [t["id"] for t in mine] == [t["id"] for t in made if t["assigneeId"] == mate.id]
    across = (await factory.client.get(f"/api/users/{mate.id}/tasks", headers=mate.headers)).json()
    assert [t["id"] for t in across["items"]] == [t["id"] for t in mine]


async def test_a_users_tasks_read_as_rows_equal_the_tasks_themselves(factory: Factory) -> None:
    """`GET /api/users/{id}/tasks` builds its items from rows (no ORM objects): each is
    exactly what `GET /api/tasks/{id}` answers, every field, pages included; tasks in a
    team the user left are not listed."""
    owner = await factory.user()
    mate = await factory.user()
    team = await factory.team(owner)
    other = await factory.team(owner)
    for team_id in (team["id"], other["id"]):
        await factory.member(team_id, owner, mate)
    made = [
        await factory.task(team["id"], owner, assigneeId=mate.id),
        await factory.task(
            team["id"],
            owner,
            assigneeId=mate.id,
            description="Zoë ✓ — a longer text",
            dueDate="2027-03-01T09:30:00.123Z",
            priority="high",
        ),
        await factory.task(other["id"], owner, assigneeId=mate.id, dueDate="2027-01-02"),
        await factory.task(team["id"], owner, assigneeId=mate.id),
    ]
    await factory.task(team["id"], owner)  # unassigned: not the mate's
    edited = await factory.client.patch(
        f"/api/tasks/{made[0]['id']}", json={"status": "done"}, headers=owner.headers
    )
    assert edited.status_code == 200

    async def listed() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 3}
        while True:
            response = await factory.client.get(
                f"/api/users/{mate.id}/tasks", params=params, headers=mate.headers
            )
            assert response.status_code == 200
            body = response.json()
            items += body["items"]
            if body["nextCursor"] is None:
                return items
            params["cursor"] = body["nextCursor"]

    expected = [
        (await factory.client.get(f"/api/tasks/{t['id']}", headers=mate.headers)).json()
        for t in made
    ]
    assert await listed() == expected
    left = await factory.client.delete(
        f"/api/teams/{other['id']}/members/{mate.id}", headers=owner.headers
    )
    assert left.status_code == 204
    assert await listed() == [t for t in expected if t["teamId"] == team["id"]]


async def test_user_teams_lists_every_team_with_role(factory: Factory) -> None:
    user = await factory.user()
    other = await factory.user()
    owned = [await factory.team(user) for _ in range(3)]
    joined = await factory.team(other)
    await factory.member(joined["id"], other, user, "admin")
    response = await factory.client.get(f"/api/users/{user.id}/teams", headers=user.headers)
    body = response.json()
    assert body["nextCursor"] is None
    assert [(t["id"], t["role"]) for t in body["items"]] == [
        *((t["id"], "owner") for t in owned),
        (joined["id"], "admin"),
    ]


async def test_assignee_must_be_a_team_member(factory: Factory) -> None:
    owner = await factory.user()
    stranger = await factory.user()
    team = await factory.team(owner)
    response = await factory.client.post(
        f"/api/teams/{team['id']}/tasks",
        json={"title": "x", "assigneeId": stranger.id},
        headers=owner.headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x" * 201},
        {"title": ""},
        {"title": "ok", "description": "d" * 10_001},
        {"title": "ok", "status": "finished"},
        {"title": "ok", "priority": "critical"},
        {"title": "ok", "assigneeId": "abc"},
        {"title": "ok", "unknownField": 1},
        {"title": 12},
        {"title": "ok", "dueDate": "next tuesday"},
        [],
    ],
    ids=lambda b: str(b)[:30],
)
async def test_bad_task_bodies_are_validation_errors(factory: Factory, body: object) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    response = await factory.client.post(
        f"/api/teams/{team['id']}/tasks", json=body, headers=owner.headers
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]
    listing = await factory.client.get(f"/api/teams/{team['id']}/tasks", headers=owner.headers)
    assert listing.json()["items"] == []  # nothing half-written


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/tasks/abc", {}),
        ("GET", "/api/teams/1.5", {}),
        ("GET", "/api/tasks/99999999999999", {}),
        ("GET", "/api/teams/1/tasks?status=nope", {}),
        ("GET", "/api/teams?limit=0", {}),
        ("GET", "/api/teams?cursor=%%%", {}),
        (
            "POST",
            "/api/teams",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
        ),
        ("PATCH", "/api/tasks/1", {"json": {"version": "one"}}),
        (
            "POST",
            "/api/auth/login",
            {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}},
        ),
    ],
)
async def test_malformed_requests_never_500(
    factory: Factory, method: str, path: str, kwargs: dict[str, object]
) -> None:
    user = await factory.user()
    headers = {**user.headers, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    response = await factory.client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code in {400, 404, 422}, response.text
    assert response.json()["error"]["code"] in {"VALIDATION_ERROR", "BAD_REQUEST", "NOT_FOUND"}
    assert "Traceback" not in response.text


async def test_team_update_and_delete(factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner, "Before")
    client: httpx.AsyncClient = factory.client
    patched = await client.patch(
        f"/api/teams/{team['id']}", json={"description": "now described"}, headers=owner.headers
    )
    assert patched.json()["description"] == "now described" and patched.json()["name"] == "Before"
    assert (
        await client.delete(f"/api/teams/{team['id']}", headers=owner.headers)
    ).status_code == 204
    assert (await client.get(f"/api/teams/{team['id']}", headers=owner.headers)).status_code == 404
