"""SPEC §4.4: reconnect with `lastEventId` (handshake or `resume`), replay, resync."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from huddle.db.session import create_engine, create_sessionmaker
from huddle.events import outbox
from tests.factories import Factory
from tests.gateway.conftest import FAST_TIMINGS, NO_PRACTICAL_LIMITS, ProbeMaker
from tests.gateway.live import LiveServer, SocketProbe, mint_token


async def test_reconnect_with_last_event_id_replays_in_order_then_sync_complete(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner, member = await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, member)
    first = await connect({"token": member.access_token})
    cursor = (await first.next("authenticated"))["lastEventId"]
    await first.close()

    missed = [await factory.task(team["id"], owner, title=f"while away {n}") for n in range(3)]
    probe = await connect({"token": member.access_token, "lastEventId": cursor})

    await probe.next("authenticated")
    replayed = [await probe.next("task_created") for _ in missed]
    assert [e["task"]["id"] for e in replayed] == [t["id"] for t in missed]
    done = await probe.next("sync_complete")
    assert done == {"lastEventId": replayed[-1]["eventId"]}
    assert probe.names.index("authenticated") < probe.names.index("task_created")


async def test_resume_on_an_open_socket_replays_after_the_given_event(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await connect({"token": owner.access_token})
    await probe.next("authenticated")
    tasks = [await factory.task(team["id"], owner) for _ in range(3)]
    live = [await probe.next("task_created") for _ in tasks]

    ack = await probe.call("resume", {"lastEventId": live[0]["eventId"]})

    assert ack["ok"] is True
    assert ack["data"]["lastEventId"] == live[-1]["eventId"]
    assert ack["data"]["replayed"] == 2
    assert ack["data"]["resyncRequired"] is False
    again = [await probe.next("task_created") for _ in range(2)]
    assert [e["eventId"] for e in again] == [e["eventId"] for e in live[1:]]
    assert await probe.next("sync_complete") == {"lastEventId": live[-1]["eventId"]}


async def test_resume_with_nothing_missed_completes_at_once(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    probe = await connect({"token": owner.access_token})
    head = (await probe.next("authenticated"))["lastEventId"]
    ack = await probe.call("resume", {"lastEventId": head})
    assert ack["data"]["replayed"] == 0
    assert (await probe.next("sync_complete"))["lastEventId"] == head


async def test_events_during_a_reconnect_arrive_once_each_and_in_order(
    connect: ProbeMaker, factory: Factory
) -> None:
    """The race between replay and live events: nothing lost, nothing doubled."""
    owner, member = await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, member)
    first = await connect({"token": member.access_token})
    cursor = (await first.next("authenticated"))["lastEventId"]
    await first.close()
    before = [await factory.task(team["id"], owner) for _ in range(5)]

    async def write_more() -> list[dict[str, object]]:
        return [await factory.task(team["id"], owner) for _ in range(10)]

    writer = asyncio.create_task(write_more())
    probe = await connect({"token": member.access_token, "lastEventId": cursor})
    after = await writer
    expected = {task["id"] for task in before + after}
    received: list[dict[str, object]] = []
    while {e["task"]["id"] for e in received} != expected:  # type: ignore[index]
        received.append(await probe.next("task_created"))
    await asyncio.sleep(0.2)
    events = probe.all("task_created")
    ids = [e["eventId"] for e in events]
    assert ids == sorted(set(ids)), "each event once, in order"


@pytest.fixture(scope="module")
def short_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose event log keeps only the newest 2 events."""
    env = {**FAST_TIMINGS, **NO_PRACTICAL_LIMITS, "EVENT_RETENTION_EVENTS": "2"}
    with LiveServer(tmp_path_factory.mktemp("short-log"), env=env) as server:
        yield server


async def _prune(server: LiveServer) -> int:
    """One pass of the retention pruning the server runs in the background."""
    settings = server.settings()
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await outbox.prune(
                session,
                keep_events=settings.event_retention_events,
                keep_for=timedelta(hours=settings.event_retention_hours),
            )
    finally:
        await engine.dispose()


async def test_a_point_older_than_the_log_keeps_requires_a_resync(
    short_log: LiveServer, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=short_log.url) as client:
        factory = Factory(client)
        owner = await factory.user()
        team = await factory.team(owner)
        first = SocketProbe(short_log.url)
        await first.connect({"token": owner.access_token})
        cursor = (await first.next("authenticated"))["lastEventId"]
        await first.close()
        for _ in range(4):
            await factory.task(team["id"], owner)
        assert await _prune(short_log) > 0

        probe = SocketProbe(short_log.url)
        try:
            await probe.connect({"token": owner.access_token, "lastEventId": cursor})
            await probe.next("authenticated")
            resync = await probe.next("resync_required")
            assert isinstance(resync["lastEventId"], int) and resync["lastEventId"] > cursor
            assert probe.all("task_created") == []
            assert probe.all("sync_complete") == []

            ack = await probe.call("resume", {"lastEventId": cursor})
            assert ack["ok"] is True and ack["data"]["resyncRequired"] is True
            await probe.next("resync_required")
            # Still live afterwards.
            task = await factory.task(team["id"], owner)
            assert (await probe.next("task_created"))["task"]["id"] == task["id"]
        finally:
            await probe.close()


async def test_a_handshake_last_event_id_is_honoured_when_authenticating_later(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    first = await connect({"token": owner.access_token})
    cursor = (await first.next("authenticated"))["lastEventId"]
    await first.close()
    missed = await factory.task(team["id"], owner)

    probe = await connect({"lastEventId": cursor})
    ack = await probe.call("authenticate", {"token": owner.access_token})
    assert ack["ok"] is True
    assert (await probe.next("task_created"))["task"]["id"] == missed["id"]
    await probe.next("sync_complete")


async def test_an_expired_handshake_replays_from_its_last_event_id_after_refresh(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    first = await connect({"token": owner.access_token})
    cursor = (await first.next("authenticated"))["lastEventId"]
    await first.close()
    missed = await factory.task(team["id"], owner)

    probe = await connect({"token": mint_token(owner.id, ttl=-30), "lastEventId": cursor})
    assert (await probe.next("authentication_error"))["code"] == "TOKEN_EXPIRED"
    ack = await probe.call("refresh_token", {"refreshToken": owner.refresh_token})
    assert ack["ok"] is True
    await probe.next("authenticated")
    assert (await probe.next("task_created"))["task"]["id"] == missed["id"]
    await probe.next("sync_complete")


def test_a_socket_replayed_past_the_relay_is_skipped_by_live_emits_until_the_relay_passes() -> None:
    """The replay read the log through event 20 while the relay was at 10: the relay's
    emits of 11..20 must skip that socket (it has them), and from 21 on include it."""
    from huddle.gateway.session import SessionRegistry, SocketSession

    registry = SessionRegistry()
    registry.mark_ahead(SocketSession("s1", "127.0.0.1", None, localhost=True), 20)  # type: ignore[arg-type]
    registry.mark_ahead(SocketSession("s2", "127.0.0.1", None, localhost=True), 12)  # type: ignore[arg-type]
    assert registry.skip_ahead(11) == ["s1", "s2"]
    assert registry.skip_ahead(12) == ["s1", "s2"]  # s2 has 12; its mark ends here
    assert registry.skip_ahead(13) == ["s1"]
    assert registry.skip_ahead(20) == ["s1"]
    assert registry.skip_ahead(21) == []
    assert registry.ahead == {}


async def _commit_behind_the_bus(server: LiveServer, team_id: int, actor_id: int) -> int:
    """An event committed to the server's log without reaching its bus, as when an API
    process committed and published it and this gateway's bus is running behind."""
    engine = create_engine(server.settings())
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            pending = outbox.Pending(
                "task_created", team_id, actor_id, {"task": {"id": 0, "title": "behind"}}
            )
            (event,) = await session.run_sync(
                lambda sync: outbox.write(sync.connection(), outbox.CoreStatements(), [pending])
            )
    finally:
        await engine.dispose()
    assert event.id is not None
    return event.id


async def test_a_socket_is_not_sent_again_what_its_data_already_reflects(tmp_path: Path) -> None:
    """A socket whose data was read after an event was committed, but before this
    gateway's relay handled it: `authenticated.lastEventId` names that event, and the
    socket does not get it live afterwards. A socket connected before gets it, once."""
    env = {**FAST_TIMINGS, **NO_PRACTICAL_LIMITS}
    with LiveServer(tmp_path / "server", env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            factory = Factory(client)
            owner, member = await factory.user(), await factory.user()
            team = await factory.team(owner)
            await factory.member(team["id"], owner, member)
            before = await SocketProbe(server.url).connect({"token": owner.access_token})
            head = (await before.next("authenticated"))["lastEventId"]

            behind = await _commit_behind_the_bus(server, team["id"], owner.id)
            assert behind == head + 1
            # The member's data is read now (nothing of theirs is cached yet).
            after = await SocketProbe(server.url).connect({"token": member.access_token})
            assert (await after.next("authenticated"))["lastEventId"] == behind

            # The next event makes the relay fill the gap from the log (after its wait).
            task = await factory.task(team["id"], owner)
            seen_before = [await before.next("task_created", timeout=15) for _ in range(2)]
            assert [e["eventId"] for e in seen_before] == [behind, behind + 1]
            seen_after = await after.next("task_created", timeout=15)
            assert (seen_after["eventId"], seen_after["task"]["id"]) == (behind + 1, task["id"])
            await asyncio.sleep(0.3)
            assert [e["eventId"] for e in after.all("task_created")] == [behind + 1]
            for probe in (before, after):
                await probe.close()
