"""GET /api/events: what a user missed, in order, only what they may see, and when to resync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from huddle.api.app import create_api
from huddle.events import outbox
from huddle.runtime import Runtime
from huddle.services.events import EventService
from tests.api.conftest import make_settings, migrated
from tests.factories import Factory, TestUser

DAY = timedelta(days=1)


async def head(runtime: Runtime) -> int:
    async with runtime.db.read() as session:
        return await outbox.last_event_id(session)


async def missed(
    client: httpx.AsyncClient, user: TestUser, after: int, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        "/api/events", params={"after": after, **params}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_events_come_in_id_order_as_their_live_payloads(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.user()
    start = await head(runtime)
    team = await factory.team(owner)
    task = await factory.task(team["id"], owner)
    await factory.client.patch(
        f"/api/tasks/{task['id']}", json={"status": "done"}, headers=owner.headers
    )
    await factory.client.delete(f"/api/tasks/{task['id']}", headers=owner.headers)

    body = await missed(factory.client, owner, start)
    items = body["items"]
    assert [i["type"] for i in items] == [
        "member_added",
        "task_created",
        "task_updated",
        "task_deleted",
    ]
    ids = [i["eventId"] for i in items]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i["teamId"] == team["id"] and i["actorId"] == owner.id for i in items)
    assert all(i["timestamp"].endswith("Z") for i in items)
    assert items[1]["task"]["id"] == task["id"] and items[2]["changes"] == ["status"]
    assert body["nextCursor"] is None and body["resyncRequired"] is False
    assert body["lastEventId"] == ids[-1] == await head(runtime)


async def test_an_outsider_never_sees_another_teams_events(
    factory: Factory, runtime: Runtime
) -> None:
    owner, outsider = await factory.user(), await factory.user()
    start = await head(runtime)
    team = await factory.team(owner)
    await factory.task(team["id"], owner)
    own = await factory.team(outsider)

    body = await missed(factory.client, outsider, start)
    assert [(i["type"], i["teamId"]) for i in body["items"]] == [("member_added", own["id"])]
    assert body["lastEventId"] == await head(runtime)


async def test_a_removed_member_hears_member_removed_and_nothing_after(
    factory: Factory, runtime: Runtime
) -> None:
    owner, member = await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, member)
    start = await head(runtime)
    await factory.task(team["id"], owner, title="before")
    response = await factory.client.delete(
        f"/api/teams/{team['id']}/members/{member.id}", headers=owner.headers
    )
    assert response.status_code == 204
    await factory.task(team["id"], owner, title="after")

    items = (await missed(factory.client, member, start))["items"]
    assert [i["type"] for i in items] == ["task_created", "member_removed"]
    assert items[0]["task"]["title"] == "before"
    assert items[1]["userId"] == member.id


async def test_a_new_member_replays_from_joining_not_before(
    factory: Factory, runtime: Runtime
) -> None:
    owner, member = await factory.user(), await factory.user()
    team = await factory.team(owner)
    start = await head(runtime)
    await factory.task(team["id"], owner, title="before joining")
    await factory.member(team["id"], owner, member)
    await factory.task(team["id"], owner, title="after joining")

    items = (await missed(factory.client, member, start))["items"]
    assert [i["type"] for i in items] == ["member_added", "task_created"]
    assert items[0]["user"]["id"] == member.id
    assert items[1]["task"]["title"] == "after joining"


async def test_pages_follow_next_cursor_to_the_same_events(
    factory: Factory, runtime: Runtime
) -> None:
    owner = await factory.user()
    start = await head(runtime)
    team = await factory.team(owner)
    for _ in range(4):
        await factory.task(team["id"], owner)
    everything = await missed(factory.client, owner, start)

    paged: list[dict[str, Any]] = []
    after, pages = start, 0
    while True:
        body = await missed(factory.client, owner, after, limit=2)
        paged.extend(body["items"])
        pages += 1
        if body["nextCursor"] is None:
            break
        after = int(body["nextCursor"])
        assert body["lastEventId"] == after
    assert paged == everything["items"] and pages == 3
    assert body["lastEventId"] == everything["lastEventId"]


async def test_an_id_beyond_the_log_requires_resync(factory: Factory, runtime: Runtime) -> None:
    owner = await factory.user()
    await factory.team(owner)
    now = await head(runtime)
    body = await missed(factory.client, owner, now + 1000)
    assert body == {
        "items": [],
        "nextCursor": None,
        "resyncRequired": True,
        "lastEventId": now,
    }
    up_to_date = await missed(factory.client, owner, now)
    assert up_to_date["items"] == [] and up_to_date["resyncRequired"] is False


async def test_the_route_needs_a_token_and_a_valid_after(factory: Factory) -> None:
    owner = await factory.user()
    anonymous = await factory.client.get("/api/events", params={"after": 0})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "TOKEN_MISSING"
    for params in ({"after": -1}, {}, {"after": 0, "limit": 1001}, {"after": "x"}):
        response = await factory.client.get("/api/events", params=params, headers=owner.headers)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


@pytest.fixture
async def small_log(tmp_path: Path) -> AsyncIterator[tuple[Factory, Runtime]]:
    """An app keeping only 3 events (SQLite, its own file: pruning shares nothing)."""
    settings = make_settings(tmp_path, None, event_retention_events=3)
    await asyncio.to_thread(migrated, settings)
    app = create_api(settings)
    async with LifespanManager(app, startup_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://huddle.test") as c:
            yield Factory(c, app.state.runtime), app.state.runtime


async def test_resync_is_required_once_pruning_passed_the_point(
    small_log: tuple[Factory, Runtime],
) -> None:
    factory, runtime = small_log
    owner = await factory.user()
    team = await factory.team(owner)
    first = await head(runtime)
    for _ in range(5):
        await factory.task(team["id"], owner)
    retention = runtime.settings.event_retention_events
    assert await EventService(runtime.db).prune(keep_events=retention, keep_for=DAY) > 0
    last = await head(runtime)

    stale = await missed(factory.client, owner, first)
    assert stale["resyncRequired"] is True and stale["items"] == []
    assert stale["lastEventId"] == last

    kept = await missed(factory.client, owner, last - 3)
    assert kept["resyncRequired"] is False
    assert [i["eventId"] for i in kept["items"]] == [last - 2, last - 1, last]
