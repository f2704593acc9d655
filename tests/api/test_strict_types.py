"""Ids and counters in bodies are strict JSON integers (issue 10): no "1", true or 1.0."""

from __future__ import annotations

import pytest

from tests.factories import Factory

NOT_INTEGERS = ["1", True, 1.0, "true", [1], {"id": 1}]


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
async def test_assignee_ids_must_be_integers(factory: Factory, value: object) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    created = await factory.client.post(
        f"/api/teams/{team['id']}/tasks",
        json={"title": "t", "assigneeId": value},
        headers=owner.headers,
    )
    assert created.status_code == 422, created.text
    assert created.json()["error"]["code"] == "VALIDATION_ERROR"
    task = await factory.task(team["id"], owner)
    patched = await factory.client.patch(
        f"/api/tasks/{task['id']}", json={"assigneeId": value}, headers=owner.headers
    )
    assert patched.status_code == 422, patched.text
    current = await factory.client.get(f"/api/tasks/{task['id']}", headers=owner.headers)
    assert current.json()["assigneeId"] is None and current.json()["version"] == 1


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
async def test_versions_must_be_integers(factory: Factory, value: object) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    task = await factory.task(team["id"], owner)
    patched = await factory.client.patch(
        f"/api/tasks/{task['id']}", json={"title": "new", "version": value}, headers=owner.headers
    )
    assert patched.status_code == 422, patched.text
    assert patched.json()["error"]["code"] == "VALIDATION_ERROR"
    current = await factory.client.get(f"/api/tasks/{task['id']}", headers=owner.headers)
    assert current.json()["title"] == task["title"]


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
async def test_member_user_ids_must_be_integers(factory: Factory, value: object) -> None:
    admin = await factory.user(admin=True)
    other = await factory.user()
    team = await factory.team(admin)
    added = await factory.client.post(
        f"/api/teams/{team['id']}/members", json={"userId": value}, headers=admin.headers
    )
    assert added.status_code == 422, added.text
    members = await factory.client.get(f"/api/teams/{team['id']}/members", headers=admin.headers)
    assert other.id not in [m["userId"] for m in members.json()["items"]]


async def test_integers_are_still_accepted(factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    task = await factory.task(team["id"], owner, assigneeId=owner.id)
    patched = await factory.client.patch(
        f"/api/tasks/{task['id']}", json={"assigneeId": None, "version": 1}, headers=owner.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["assigneeId"] is None and patched.json()["version"] == 2
