"""Presence across instances: two real processes sharing one Redis.

X is `huddle serve` (the API and a gateway, SQLite), Y a `huddle gateway` that
uses X as its backend; each test gets its own REDIS_PREFIX. A member connected
only to Y is online for the members on X and the other way round, and each
transition (first socket anywhere up, last socket anywhere down) reaches every
instance exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import Factory, TestUser
from tests.gateway.live import LiveServer, SocketProbe, changes_about

pytestmark = [pytest.mark.redis, pytest.mark.slow]

QUIET = 0.5
"""Seconds a probe must stay without a further presence_changed to count as 'only one'."""


@pytest.fixture
def cluster(
    tmp_path: Path, redis_url: str, redis_prefix: str, unique: str
) -> Iterator[dict[str, LiveServer]]:
    shared = {"REDIS_URL": redis_url, "REDIS_PREFIX": f"{redis_prefix}-presence-{unique}"}
    x = LiveServer(tmp_path / "x", env=shared)
    y = LiveServer(tmp_path / "y", role="gateway", env={**shared, "BACKEND_URL": x.url})
    try:
        x.start()
        y.start()
        yield {"x": x, "y": y}
    finally:
        for server in (y, x):
            server.stop()
    for server in (x, y):
        assert "Traceback" not in server.log_text(tail=None)


@pytest.fixture
async def factory(cluster: dict[str, LiveServer]) -> AsyncIterator[Factory]:
    async with httpx.AsyncClient(base_url=cluster["x"].url, timeout=10) as client:
        yield Factory(client)


@pytest.fixture
async def sockets(cluster: dict[str, LiveServer]) -> AsyncIterator[Any]:
    """`await sockets("x" | "y", user)`: an authenticated probe on that instance."""
    probes: list[SocketProbe] = []

    async def open_on(instance: str, user: TestUser) -> SocketProbe:
        probe = SocketProbe(cluster[instance].url)
        probes.append(probe)
        await probe.connect({"token": user.access_token})
        await probe.next("authenticated", timeout=10)
        return probe

    yield open_on
    await asyncio.gather(*(probe.close() for probe in probes))


def changes(probe: SocketProbe, user: TestUser) -> list[Any]:
    """What the presence_changed frames a probe received said about `user`."""
    return changes_about(probe.all("presence_changed"), user.id)


async def until_changes(probe: SocketProbe, user: TestUser, count: int) -> list[Any]:
    """Wait until `probe` has `count` presence changes about `user`; returns them."""
    deadline = asyncio.get_running_loop().time() + 10
    while len(changes(probe, user)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{len(changes(probe, user))} of {count} changes: {probe.events}")
        await asyncio.sleep(0.02)
    return changes(probe, user)


async def team_of(factory: Factory, owner: TestUser, *members: TestUser) -> int:
    team = await factory.team(owner)
    for member in members:
        await factory.member(team["id"], owner, member)
    return int(team["id"])


async def alice_on_x_bob_on_y(factory: Factory, sockets: Any) -> tuple[Any, Any, int, Any, Any]:
    """Two members of a new team, Alice with a socket on instance x, Bob on y."""
    alice, bob = await factory.user(), await factory.user()
    team = await team_of(factory, alice, bob)
    return alice, bob, team, await sockets("x", alice), await sockets("y", bob)


async def test_a_member_on_another_instance_is_announced_and_listed(
    factory: Factory, sockets: Any
) -> None:
    alice, bob, team, on_x, on_y = await alice_on_x_bob_on_y(factory, sockets)

    assert await until_changes(on_x, bob, 1) == [{"teamId": team, "userId": bob.id, "online": True}]
    listed = sorted([alice.id, bob.id])
    assert await on_x.call("team_presence", {"teamId": team}) == {
        "ok": True,
        "data": {"teamId": team, "online": listed},
    }
    assert (await on_y.call("team_presence", {"teamId": team}))["data"]["online"] == listed


async def test_the_last_socket_closing_on_another_instance_takes_the_member_offline(
    factory: Factory, sockets: Any
) -> None:
    alice, bob, team, on_x, on_y = await alice_on_x_bob_on_y(factory, sockets)
    await until_changes(on_x, bob, 1)

    await on_y.close()
    offline = (await until_changes(on_x, bob, 2))[1]
    assert offline == {"teamId": team, "userId": bob.id, "online": False}
    ack = await on_x.call("team_presence", {"teamId": team})
    assert ack["data"]["online"] == [alice.id]


async def test_a_member_on_both_instances_makes_one_transition_each_way_everywhere(
    factory: Factory, sockets: Any
) -> None:
    alice, bob, carol = await factory.user(), await factory.user(), await factory.user()
    team = await team_of(factory, alice, bob, carol)
    watchers = [await sockets("x", alice), await sockets("y", carol)]
    up = {"teamId": team, "userId": bob.id, "online": True}
    down = {**up, "online": False}

    bob_x = await sockets("x", bob)
    bob_y = await sockets("y", bob)
    for watcher in watchers:
        assert await until_changes(watcher, bob, 1) == [up]
    await asyncio.sleep(QUIET)
    for watcher in watchers:
        assert changes(watcher, bob) == [up]  # the second socket, on Y, changed nothing

    await bob_x.close()
    await asyncio.sleep(QUIET)
    for watcher in watchers:
        assert changes(watcher, bob) == [up]  # still online through Y
        ack = await watcher.call("team_presence", {"teamId": team})
        assert ack["data"]["online"] == sorted([alice.id, bob.id, carol.id])

    await bob_y.close()
    for watcher in watchers:
        assert await until_changes(watcher, bob, 2) == [up, down]
    await asyncio.sleep(QUIET)
    for watcher in watchers:
        assert changes(watcher, bob) == [up, down]


async def test_a_member_added_while_on_another_instance_comes_online_after_the_event(
    factory: Factory, sockets: Any
) -> None:
    alice, newcomer = await factory.user(), await factory.user()
    team = await team_of(factory, alice)
    on_x = await sockets("x", alice)
    on_y = await sockets("y", newcomer)

    await factory.member(team, alice, newcomer)
    assert (await on_y.next("member_added", timeout=10))["teamId"] == team
    assert await until_changes(on_x, newcomer, 1) == [
        {"teamId": team, "userId": newcomer.id, "online": True}
    ]
    order = [
        name
        for name, data in on_x.events
        if name == "member_added" or (name == "presence_changed" and newcomer.id in data["online"])
    ]
    assert order == ["member_added", "presence_changed"]
    ack = await on_x.call("team_presence", {"teamId": team})
    assert ack["data"]["online"] == sorted([alice.id, newcomer.id])


async def test_an_instance_shutting_down_takes_its_members_offline_everywhere(
    cluster: dict[str, LiveServer], factory: Factory, sockets: Any
) -> None:
    alice, bob, team, on_x, _ = await alice_on_x_bob_on_y(factory, sockets)
    await until_changes(on_x, bob, 1)

    await asyncio.to_thread(cluster["y"].stop)
    offline = (await until_changes(on_x, bob, 2))[1]
    assert offline == {"teamId": team, "userId": bob.id, "online": False}
    ack = await on_x.call("team_presence", {"teamId": team})
    assert ack["data"]["online"] == [alice.id]
