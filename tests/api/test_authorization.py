"""Every route by outsider / member / team admin / owner / global admin (SPEC §3).

What the caller may not see is 404, what they see but may not change is 403,
and the two /api/users/{userId}/… routes answer 403 to anyone but the user
and administrators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.factories import Factory, TestUser

ROLES = ["outsider", "member", "team_admin", "owner", "global_admin"]


@dataclass
class World:
    owner: TestUser
    team_admin: TestUser
    member: TestUser
    other_member: TestUser
    outsider: TestUser
    global_admin: TestUser
    newcomer: TestUser
    team_id: int
    task_id: int

    def caller(self, role: str) -> TestUser:
        user: TestUser = getattr(self, role)
        return user


async def build(factory: Factory) -> World:
    owner = await factory.user()
    users = [await factory.user() for _ in range(4)]
    global_admin = await factory.user(admin=True)
    team = await factory.team(owner)
    team_admin, member, other_member, outsider = users
    await factory.member(team["id"], owner, team_admin, "admin")
    await factory.member(team["id"], owner, member)
    await factory.member(team["id"], owner, other_member)
    task = await factory.task(team["id"], owner)
    newcomer = await factory.user()
    return World(
        owner,
        team_admin,
        member,
        other_member,
        outsider,
        global_admin,
        newcomer,
        team["id"],
        task["id"],
    )


def _case(
    method: str, path: str, body: Any, *expected: int
) -> tuple[str, str, Any, dict[str, int]]:
    return method, path, body, dict(zip(ROLES, expected, strict=True))


CASES = [
    _case("GET", "/api/teams/{team}", None, 404, 200, 200, 200, 200),
    _case("PATCH", "/api/teams/{team}", {"name": "Renamed"}, 404, 403, 200, 200, 200),
    _case("DELETE", "/api/teams/{team}", None, 404, 403, 403, 204, 204),
    _case("GET", "/api/teams/{team}/members", None, 404, 200, 200, 200, 200),
    _case(
        "POST", "/api/teams/{team}/members", {"email": "{newcomer_email}"}, 404, 403, 201, 201, 201
    ),
    _case("PATCH", "/api/teams/{team}/members/{other}", {"role": "admin"}, 404, 403, 200, 200, 200),
    _case("DELETE", "/api/teams/{team}/members/{other}", None, 404, 403, 204, 204, 204),
    _case("GET", "/api/teams/{team}/tasks", None, 404, 200, 200, 200, 200),
    _case("POST", "/api/teams/{team}/tasks", {"title": "New"}, 404, 201, 201, 201, 201),
    _case("GET", "/api/tasks/{task}", None, 404, 200, 200, 200, 200),
    _case("PATCH", "/api/tasks/{task}", {"status": "done"}, 404, 200, 200, 200, 200),
    _case("DELETE", "/api/tasks/{task}", None, 404, 403, 204, 204, 204),
    _case("GET", "/api/users/{owner}/teams", None, 403, 403, 403, 200, 200),
    _case("GET", "/api/users/{owner}/tasks", None, 403, 403, 403, 200, 200),
]


def _fill(value: Any, world: World) -> Any:
    ids = {
        "{team}": world.team_id,
        "{task}": world.task_id,
        "{owner}": world.owner.id,
        "{other}": world.other_member.id,
        "{newcomer}": world.newcomer.id,
    }
    if value == "{newcomer_email}":
        return world.newcomer.email
    if isinstance(value, str):
        if value in ids:
            return ids[value]
        for key, number in ids.items():
            value = value.replace(key, str(number))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), CASES, ids=[f"{c[0]} {c[1]}" for c in CASES]
)
async def test_route_answers_by_role(
    factory: Factory, role: str, method: str, path: str, body: Any, expected: dict[str, int]
) -> None:
    world = await build(factory)
    caller = world.caller(role)
    response = await factory.client.request(
        method,
        _fill(path, world),
        json=_fill(body, world) if body is not None else None,
        headers=caller.headers,
    )
    assert response.status_code == expected[role], response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] == {403: "FORBIDDEN", 404: "NOT_FOUND"}[response.status_code]


async def test_only_owners_grant_ownership(factory: Factory) -> None:
    world = await build(factory)
    path = f"/api/teams/{world.team_id}/members/{world.member.id}"
    by_admin = await factory.client.patch(
        path, json={"role": "owner"}, headers=world.team_admin.headers
    )
    assert by_admin.status_code == 403
    by_owner = await factory.client.patch(path, json={"role": "owner"}, headers=world.owner.headers)
    assert by_owner.status_code == 200 and by_owner.json()["role"] == "owner"


async def test_the_last_owner_cannot_leave(factory: Factory) -> None:
    world = await build(factory)
    response = await factory.client.delete(
        f"/api/teams/{world.team_id}/members/{world.owner.id}", headers=world.owner.headers
    )
    assert response.status_code == 409


async def test_a_member_may_leave(factory: Factory) -> None:
    world = await build(factory)
    response = await factory.client.delete(
        f"/api/teams/{world.team_id}/members/{world.member.id}", headers=world.member.headers
    )
    assert response.status_code == 204
    gone = await factory.client.get(f"/api/teams/{world.team_id}", headers=world.member.headers)
    assert gone.status_code == 404


async def test_task_creator_may_delete_their_own_task(factory: Factory) -> None:
    world = await build(factory)
    task = await factory.task(world.team_id, world.member)
    response = await factory.client.delete(f"/api/tasks/{task['id']}", headers=world.member.headers)
    assert response.status_code == 204


async def test_team_lists_show_the_callers_role(factory: Factory) -> None:
    world = await build(factory)
    for user, role in (
        (world.owner, "owner"),
        (world.team_admin, "admin"),
        (world.member, "member"),
    ):
        response = await factory.client.get("/api/teams", headers=user.headers)
        assert response.status_code == 200
        items = response.json()["items"]
        assert [(t["id"], t["role"]) for t in items] == [(world.team_id, role)]


@pytest.fixture
def db_url() -> None:
    """Authorization is decided above the database: the matrix runs on SQLite only."""
    return None
