"""The transactional outbox: events commit with their change, or not at all, in id order."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, func, insert, select
from sqlalchemy.exc import IntegrityError

from huddle.clock import utcnow
from huddle.db.models import Event, EventCounter
from huddle.errors import DatabaseUnavailable
from huddle.events.envelope import Envelope
from huddle.runtime import Runtime
from huddle.services.events import EventService
from tests.factories import Factory


async def _events(runtime: Runtime, team_id: int) -> list[Event]:
    async with runtime.db.read() as session:
        return list(
            await session.scalars(select(Event).where(Event.team_id == team_id).order_by(Event.id))
        )


def _listen(runtime: Runtime) -> list[Envelope]:
    heard: list[Envelope] = []

    async def handler(event: Envelope) -> None:
        heard.append(event)

    runtime.bus.subscribe(handler)
    return heard


async def test_a_failed_transaction_leaves_no_event(runtime: Runtime, factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    heard = _listen(runtime)
    async with runtime.db.read() as session:
        counter_before = await session.scalar(select(EventCounter.last_id))

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with runtime.db.unit() as unit:
            await unit.emit(
                "task_created", team_id=team["id"], actor_id=owner.id, body={"task": {}}
            )
            raise Boom
    assert [e.type for e in await _events(runtime, team["id"])] == ["member_added"]
    async with runtime.db.read() as session:
        assert await session.scalar(select(EventCounter.last_id)) == counter_before
    assert heard == []


async def test_a_connection_lost_mid_unit_is_unavailable_and_commits_nothing(
    runtime: Runtime, factory: Factory
) -> None:
    """The outbox write on a dropped connection is a 503, not a 500 or a half-written event."""
    owner = await factory.user()
    team = await factory.team(owner)
    heard = _listen(runtime)
    async with runtime.db.read() as session:
        counter_before = await session.scalar(select(EventCounter.last_id))

    with pytest.raises(DatabaseUnavailable):
        async with runtime.db.unit() as unit:
            await unit.emit("task_created", team_id=team["id"], actor_id=owner.id, body={})
            raw = await (await unit.session.connection()).get_raw_connection()
            driver: Any = raw.driver_connection
            # Each driver's own way of dropping the connection at once.
            if type(driver).__module__.startswith("aiosqlite"):
                await driver.close()  # the stock path (ACCEL=off): aiosqlite's thread ends
            elif hasattr(driver, "stop"):
                driver.stop()  # the SQLAlchemy accel module's inline SQLite
            else:
                driver.terminate()  # asyncpg
            await unit.emit("task_updated", team_id=team["id"], actor_id=owner.id, body={})
    assert [e.type for e in await _events(runtime, team["id"])] == ["member_added"]
    async with runtime.db.read() as session:
        assert await session.scalar(select(EventCounter.last_id)) == counter_before
    assert heard == []
    # The pool replaced the dropped connection: the next unit writes.
    await factory.task(team["id"], owner)
    assert [e.type for e in heard] == ["task_created"]


async def test_an_outbox_insert_refused_by_the_database_is_sqlalchemys_error(
    runtime: Runtime, factory: Factory
) -> None:
    """A constraint error in the outbox write is IntegrityError (500), not an outage; rolls back."""
    owner = await factory.user()
    team = await factory.team(owner)
    async with runtime.db.read() as session:
        counter_before = await session.scalar(select(EventCounter.last_id))
    async with runtime.db.unit() as unit:  # an event row the counter does not know about
        await unit.session.execute(
            insert(Event).values(
                id=(counter_before or 0) + 1, team_id=0, type="x", payload={}, created_at=utcnow()
            )
        )
    with pytest.raises(IntegrityError):
        async with runtime.db.unit() as unit:
            await unit.emit("task_created", team_id=team["id"], actor_id=owner.id, body={})
    async with runtime.db.read() as session:
        assert await session.scalar(select(EventCounter.last_id)) == counter_before
    async with runtime.db.unit() as unit:  # PostgreSQL's database is shared with later tests
        await unit.session.execute(delete(Event).where(Event.team_id == 0))


async def test_statement_listeners_see_the_outbox_writes(
    runtime: Runtime, factory: Factory
) -> None:
    """SQL tracing hooked on the engine (before_cursor_execute) sees the outbox's statements."""
    owner = await factory.user()
    team = await factory.team(owner)
    seen: list[str] = []

    def trace(conn: object, cursor: object, statement: str, *rest: object) -> None:
        seen.append(statement.split()[0] + " " + statement.split()[1])

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", trace)
    try:
        async with runtime.db.unit() as unit:
            await unit.emit("task_created", team_id=team["id"], actor_id=owner.id, body={})
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", trace)
    assert seen == ["UPDATE event_counter", "INSERT INTO"]


async def test_a_rejected_change_writes_no_event(runtime: Runtime, factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    response = await factory.client.post(
        f"/api/teams/{team['id']}/tasks",
        json={"title": "x", "assigneeId": 999_999},
        headers=owner.headers,
    )
    assert response.status_code == 422
    assert [e.type for e in await _events(runtime, team["id"])] == ["member_added"]


async def test_each_commit_leaves_exactly_one_event_in_order(
    runtime: Runtime, factory: Factory
) -> None:
    owner = await factory.user()
    mate = await factory.user()
    heard = _listen(runtime)
    team = await factory.team(owner)
    await factory.member(team["id"], owner, mate)
    task = await factory.task(team["id"], owner)
    await factory.client.patch(
        f"/api/tasks/{task['id']}",
        json={"status": "done", "assigneeId": mate.id},
        headers=owner.headers,
    )
    await factory.client.delete(f"/api/tasks/{task['id']}", headers=owner.headers)
    await factory.client.delete(f"/api/teams/{team['id']}/members/{mate.id}", headers=owner.headers)

    rows = await _events(runtime, team["id"])
    types = [
        "member_added",
        "member_added",
        "task_created",
        "task_updated",
        "task_deleted",
        "member_removed",
    ]
    assert [r.type for r in rows] == types
    ids = [r.id for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    updated = rows[3].payload
    assert updated["eventId"] == rows[3].id and updated["teamId"] == team["id"]
    assert sorted(updated["changes"]) == ["assigneeId", "status"]
    assert updated["task"]["status"] == "done" and updated["actorId"] == owner.id
    assert updated["timestamp"].endswith("Z")
    assert rows[5].payload["userId"] == mate.id and rows[5].subject_user_id == mate.id
    # The bus heard the same events, after commit, in the same order.
    assert [(e.id, e.type) for e in heard if e.team_id == team["id"]] == [
        (r.id, r.type) for r in rows
    ]


async def test_concurrent_writers_get_gapless_increasing_ids(
    runtime: Runtime, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    heard = _listen(runtime)
    results = await asyncio.gather(*(factory.task(team["id"], owner) for _ in range(20)))
    assert len(results) == 20
    rows = [r for r in await _events(runtime, team["id"]) if r.type == "task_created"]
    ids = [r.id for r in rows]
    assert ids == list(range(ids[0], ids[0] + 20))
    assert [e.id for e in heard if e.type == "task_created"] == ids


async def test_a_slow_unit_does_not_hold_up_other_writers_and_ids_follow_commits(
    runtime: Runtime, factory: Factory
) -> None:
    """Events are written with the commit: a unit that emitted and then waits (on a
    request, a read) holds no lock and no connection, so another writer commits
    meanwhile and takes the earlier id. (The event used to be written at `emit`:
    on PostgreSQL the counter row's lock was held from there until commit and the
    second writer waited; on SQLite it failed with "database is locked".)"""
    owner = await factory.user()
    team = await factory.team(owner)
    heard = _listen(runtime)
    other_committed = asyncio.Event()

    async def slow() -> None:
        async with runtime.db.unit() as unit:
            await unit.emit("task_updated", team_id=team["id"], actor_id=owner.id, body={})
            await other_committed.wait()

    async def quick() -> None:
        async with runtime.db.unit() as unit:
            await unit.session.execute(select(EventCounter.last_id))
            await unit.emit("task_deleted", team_id=team["id"], actor_id=owner.id, body={})
        other_committed.set()

    async with asyncio.timeout(10):
        await asyncio.gather(slow(), quick())
    rows = await _events(runtime, team["id"])
    assert [r.type for r in rows] == ["member_added", "task_deleted", "task_updated"]
    assert rows[2].id == rows[1].id + 1
    assert [e.type for e in heard if e.team_id == team["id"]] == ["task_deleted", "task_updated"]


async def test_retention_prunes_and_remembers_how_far(runtime: Runtime, factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    for _ in range(5):
        await factory.task(team["id"], owner)
    dropped = await EventService(runtime.db).prune(keep_events=2, keep_for=timedelta(days=1))
    assert dropped >= 4
    async with runtime.db.read() as session:
        remaining = await session.scalar(select(func.count()).select_from(Event))
        counter = (await session.execute(select(EventCounter))).scalar_one()
    assert remaining == 2
    assert counter.pruned_through == counter.last_id - 2


async def test_an_event_payload_reads_back_exactly_as_written(
    runtime: Runtime, factory: Factory
) -> None:
    """JSON columns go through orjson (db/session.py): text, numbers and nesting survive."""
    owner = await factory.user()
    team = await factory.team(owner)
    body = {"task": {"title": "Zoë ✓ — \U0001f680", "n": 2**53 + 1, "ratio": 0.1}, "tags": []}
    async with runtime.db.unit() as unit:
        await unit.emit("task_updated", team_id=team["id"], actor_id=owner.id, body=body)
    (written,) = unit.events
    async with runtime.db.read() as session:
        stored = await session.get(Event, written.id)
    assert stored is not None
    assert stored.payload == written.payload
    assert stored.payload["task"] == body["task"]
