"""InProcessSource against a real Runtime on SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from huddle.db.migrate import upgrade
from huddle.errors import (
    BackendUnavailable,
    BadRequest,
    RefreshTokenReused,
    TokenInvalid,
    TokenRevoked,
)
from huddle.events import outbox
from huddle.events.envelope import Envelope
from huddle.events.types import stale_data
from huddle.gateway.sources.base import UserData
from huddle.gateway.sources.inprocess import InProcessSource
from huddle.runtime import Runtime
from huddle.security.tokens import Claims
from huddle.services.access import Actor
from huddle.services.events import EventService
from tests.gateway.backend_api import settings_for

PASSWORD = "correct-horse-battery"


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = settings_for(tmp_path, event_retention_events=2)
    await asyncio.to_thread(upgrade, settings)
    rt = await Runtime.start(settings)
    yield rt
    await rt.stop()


@pytest.fixture
async def source(runtime: Runtime) -> AsyncIterator[InProcessSource]:
    src = InProcessSource(runtime, probe_interval=0.05)

    async def relay(event: Envelope) -> None:
        """What the gateway's relay does with every event (tests/gateway cover the relay)."""
        src.invalidate(stale_data(event))

    runtime.bus.subscribe(relay)
    await src.start()
    yield src
    await src.stop()


async def new_user(runtime: Runtime, name: str) -> Actor:
    user = await runtime.auth.register(f"{name}-{time.time_ns()}@example.com", PASSWORD, name)
    return Actor(user.id)


def token(runtime: Runtime, actor: Actor) -> str:
    return runtime.tokens.issue_access(actor.id).token


def verified(runtime: Runtime, access_token: str) -> Claims:
    """What the gateway's edge hands on after verifying the token."""
    return runtime.tokens.verify_access(access_token)


async def fetch_as(source: InProcessSource, runtime: Runtime, actor: Actor) -> UserData:
    """`fetch` with a fresh token of `actor`, verified as the gateway does."""
    access_token = token(runtime, actor)
    return await source.fetch(verified(runtime, access_token), access_token)


async def head(runtime: Runtime) -> int:
    async with runtime.db.read() as session:
        return await outbox.last_event_id(session)


async def test_fetch_returns_profile_every_team_with_role_and_assigned_tasks(
    runtime: Runtime, source: InProcessSource
) -> None:
    ada, bob = await new_user(runtime, "ada"), await new_user(runtime, "bob")
    mine = [(await runtime.teams.create(ada, f"Team {i}", "")).team.id for i in range(3)]
    bobs = (await runtime.teams.create(bob, "Bob's", "")).team.id
    await runtime.teams.add_member(bob, bobs, "admin", user_id=ada.id)
    assigned = await runtime.tasks.create(ada, mine[0], {"title": "a", "assignee_id": ada.id})
    await runtime.tasks.create(ada, mine[1], {"title": "unassigned"})
    theirs = await runtime.tasks.create(bob, bobs, {"title": "b", "assignee_id": ada.id})
    await runtime.tasks.create(bob, bobs, {"title": "bob's own", "assignee_id": bob.id})

    data = await fetch_as(source, runtime, ada)
    assert data.degraded is False
    assert data.user["id"] == ada.id and data.user["name"] == "ada"
    assert set(data.user) == {"id", "email", "name", "isAdmin", "createdAt"}
    assert [(t["id"], t["role"]) for t in data.teams] == [
        *[(team_id, "owner") for team_id in mine],
        (bobs, "admin"),
    ]
    assert [t["id"] for t in data.tasks] == [assigned.id, theirs.id]
    assert data.tasks[0]["teamId"] == mine[0]


async def test_fetch_refuses_a_revoked_token_and_an_unknown_user(
    runtime: Runtime, source: InProcessSource
) -> None:
    ada = await new_user(runtime, "ada")
    old = token(runtime, ada)
    await asyncio.sleep(0.002)
    await runtime.auth.logout_all(ada.id)
    with pytest.raises(TokenRevoked):
        await source.fetch(verified(runtime, old), old)
    ghost = runtime.tokens.issue_access(2_000_000_000).token
    with pytest.raises(TokenInvalid):
        await source.fetch(verified(runtime, ghost), ghost)


async def test_sockets_authenticating_together_share_one_read_and_each_gets_its_own_data(
    runtime: Runtime,
) -> None:
    """A reconnect storm: 30 cold sockets at once (plus an unknown user and a revoked
    token) cost one batched read, not one per socket, and nobody gets another's data.
    (Batching is what a PostgreSQL deployment does; SQLite reads inline, one by one.)"""
    source = InProcessSource(runtime, batched=True)
    await source.start()
    try:
        await _storm(runtime, source)
    finally:
        await source.stop()


async def _storm(runtime: Runtime, source: InProcessSource) -> None:
    owner = await new_user(runtime, "owner")
    shared = (await runtime.teams.create(owner, "Everyone", "")).team.id
    users = [await new_user(runtime, f"u{i}") for i in range(30)]
    expected: dict[int, tuple[list[int], list[int]]] = {}
    for i, user in enumerate(users):
        await runtime.teams.add_member(owner, shared, "member", user_id=user.id)
        own = (await runtime.teams.create(user, f"Own {i}", "")).team.id
        task = await runtime.tasks.create(user, own, {"title": f"t{i}", "assignee_id": user.id})
        expected[user.id] = ([shared, own], [task.id])
    revoked = await new_user(runtime, "revoked")
    old = token(runtime, revoked)
    await asyncio.sleep(0.002)
    await runtime.auth.logout_all(revoked.id)
    ghost = runtime.tokens.issue_access(2_000_000_000).token

    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sync_engine = runtime.db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        results = await asyncio.gather(
            *(fetch_as(source, runtime, user) for user in users),
            source.fetch(verified(runtime, ghost), ghost),
            source.fetch(verified(runtime, old), old),
            return_exceptions=True,
        )
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)

    *datas, unknown, refused = results
    assert isinstance(unknown, TokenInvalid)
    assert isinstance(refused, TokenRevoked)
    for user, data in zip(users, datas, strict=True):
        assert isinstance(data, UserData) and not data.degraded
        assert data.user["id"] == user.id
        teams, tasks = expected[user.id]
        assert [t["id"] for t in data.teams] == teams
        assert [t["id"] for t in data.tasks] == tasks
    # User rows (with the log's head), teams, tasks: once for all 32.
    assert len(statements) == 3, statements
    async with runtime.db.read() as session:
        head = await outbox.last_event_id(session)
    assert {data.head for data in datas} == {head}  # type: ignore[union-attr]

    # Each one's data was cached as a lone read would have cached it.
    again = await fetch_as(source, runtime, users[7])
    assert [t["id"] for t in again.teams] == expected[users[7].id][0]


async def test_rotate_redeems_a_refresh_token_once(
    runtime: Runtime, source: InProcessSource
) -> None:
    email = f"ada-{time.time_ns()}@example.com"
    ada = await runtime.auth.register(email, PASSWORD, "ada")
    session = await runtime.auth.login(email, PASSWORD)
    pair = await source.rotate(session.refresh_token)
    assert pair.refresh_token != session.refresh_token
    assert pair.expires_in == runtime.settings.jwt_access_ttl
    fresh = await source.fetch(verified(runtime, pair.access_token), pair.access_token)
    assert fresh.user["id"] == ada.id
    with pytest.raises(RefreshTokenReused):
        await source.rotate(session.refresh_token)


async def test_replay_in_order_then_resync_once_pruned(
    runtime: Runtime, source: InProcessSource
) -> None:
    ada = await new_user(runtime, "ada")
    start = await head(runtime)
    team = (await runtime.teams.create(ada, "T", "")).team.id
    task = await runtime.tasks.create(ada, team, {"title": "a"})
    await runtime.tasks.update(ada, task.id, {"title": "b"}, None)
    await runtime.tasks.delete(ada, task.id)

    replay = await source.replay(ada.id, "", start)
    assert [e.type for e in replay.events] == [
        "member_added",
        "task_created",
        "task_updated",
        "task_deleted",
    ]
    ids = [e.id for e in replay.events]
    assert ids == sorted(ids) and replay.last_event_id == ids[-1] == await head(runtime)
    assert not replay.resync_required and not replay.more

    nothing = await source.replay(ada.id, "", await head(runtime))
    assert nothing.events == [] and not nothing.resync_required

    await EventService(runtime.db).prune(keep_events=2, keep_for=timedelta(days=1))
    gone = await source.replay(ada.id, "", start)
    assert gone.resync_required and gone.events == []
    assert gone.last_event_id == await head(runtime)
    kept = await source.replay(ada.id, "", ids[1])
    assert [e.type for e in kept.events] == ["task_updated", "task_deleted"]

    assert (await source.replay(ada.id, "", ids[-1] + 100)).resync_required
    with pytest.raises(BadRequest):
        await source.replay(ada.id, "", -1)


async def test_database_down_degrades_then_recovery_runs_the_callbacks(tmp_path: Path) -> None:
    """A database that cannot be opened, then migrated into place while the source watches."""
    data_dir = tmp_path / "later"
    settings = settings_for(tmp_path, database_url=f"sqlite+aiosqlite:///{data_dir / 'huddle.db'}")
    runtime = await Runtime.start(settings)
    source = InProcessSource(runtime, probe_interval=0.05)
    recovered = asyncio.Event()

    async def on_recovered() -> None:
        recovered.set()

    source.on_recovered(on_recovered)
    await source.start()
    try:
        some_token = runtime.tokens.issue_access(1).token
        data = await source.fetch(verified(runtime, some_token), some_token)
        assert data.degraded and data.user == {"id": 1} and data.teams == [] == data.tasks
        assert not source.healthy
        with pytest.raises(BackendUnavailable):
            await source.replay(1, some_token, 0)

        data_dir.mkdir()
        await asyncio.to_thread(upgrade, settings)
        await asyncio.wait_for(recovered.wait(), timeout=3)
        assert source.healthy
        with pytest.raises(TokenInvalid):  # the database answers now: user 1 does not exist
            await source.fetch(verified(runtime, some_token), some_token)
    finally:
        await source.stop()
        await runtime.stop()


async def test_warm_cache_follows_every_change_that_reaches_the_bus(
    runtime: Runtime, source: InProcessSource
) -> None:
    """The in-process cache is warm, and exact: each change below shows on the next fetch."""
    ada, bob = await new_user(runtime, "ada"), await new_user(runtime, "bob")
    team = (await runtime.teams.create(ada, "Shared", "")).team.id
    await runtime.teams.add_member(ada, team, "member", user_id=bob.id)
    task = await runtime.tasks.create(ada, team, {"title": "t", "assignee_id": bob.id})

    async def bobs_tasks() -> list[int]:
        return [t["id"] for t in (await fetch_as(source, runtime, bob)).tasks]

    assert await bobs_tasks() == [task.id]
    assert await bobs_tasks() == [task.id]  # served warm
    # Reassigned away from bob (the event names only the new assignee).
    await runtime.tasks.update(ada, task.id, {"assignee_id": ada.id}, None)
    assert await bobs_tasks() == []
    again = await runtime.tasks.create(bob, team, {"title": "u", "assignee_id": bob.id})
    assert await bobs_tasks() == [again.id]
    await runtime.tasks.delete(ada, again.id)
    assert await bobs_tasks() == []
    await runtime.teams.update(ada, team, name="Renamed", description=None)
    teams = (await fetch_as(source, runtime, bob)).teams
    assert [t["name"] for t in teams] == ["Renamed"]
    await runtime.teams.remove_member(ada, team, bob.id)
    assert (await fetch_as(source, runtime, bob)).teams == []


async def test_warm_cache_never_outlives_a_revocation(
    runtime: Runtime, source: InProcessSource
) -> None:
    ada = await new_user(runtime, "ada")
    old = token(runtime, ada)
    await source.fetch(verified(runtime, old), old)
    await runtime.auth.logout_all(ada.id)
    with pytest.raises(TokenRevoked):
        await source.fetch(verified(runtime, old), old)
