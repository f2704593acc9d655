"""Presence per team: `team_presence` and `presence_changed` on first socket up, last down.

`presence_changed` is gathered per PRESENCE_BATCH_MS window (50 ms on the
shared server): a member hears each real change once, and nothing of a user
who came and went within one window.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import Factory, TestUser
from tests.gateway.conftest import FAST_TIMINGS, NO_PRACTICAL_LIMITS, ProbeMaker
from tests.gateway.live import LiveServer, SocketProbe, changes_about

SETTLE = 0.3
"""Seconds, well past the shared server's window, after which no further frame may arrive."""


async def _member_comes_online(
    connect: ProbeMaker, factory: Factory
) -> tuple[dict[str, Any], TestUser, TestUser, SocketProbe, SocketProbe]:
    """An owner watching their team; a member's first socket arrives and is announced online."""
    owner, member = await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, member)
    watcher = await connect({"token": owner.access_token})
    await watcher.next("authenticated")
    arrival = await connect({"token": member.access_token})
    await arrival.next("authenticated")
    # The owner's own arrival may share the window (and the frame) with the member's.
    up = await until_about(watcher, member, 1)
    assert up == [{"teamId": team["id"], "userId": member.id, "online": True}]
    return team, owner, member, watcher, arrival


async def test_presence_changes_on_first_socket_up_and_last_socket_down(
    connect: ProbeMaker, factory: Factory
) -> None:
    team, owner, member, watcher, first = await _member_comes_online(connect, factory)

    second = await connect({"token": member.access_token})
    await second.next("authenticated")
    ack = await watcher.call("team_presence", {"teamId": team["id"]})
    assert ack == {
        "ok": True,
        "data": {"teamId": team["id"], "online": sorted([owner.id, member.id])},
    }

    await second.close()
    await watcher.quiet("presence_changed", 0.2)  # one socket of the member is still up
    await first.close()
    down = (await until_about(watcher, member, 2))[1]
    assert down == {"teamId": team["id"], "userId": member.id, "online": False}
    ack = await watcher.call("team_presence", {"teamId": team["id"]})
    assert ack["data"]["online"] == [owner.id]


async def test_presence_of_a_team_the_user_is_not_in_is_not_found(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner, outsider = await factory.user(), await factory.user()
    team = await factory.team(owner)
    probe = await connect({"token": outsider.access_token})
    await probe.next("authenticated")
    for team_id in (team["id"], 2_000_000_000):
        ack = await probe.call("team_presence", {"teamId": team_id})
        assert ack["ok"] is False
        assert ack["error"]["code"] == "NOT_FOUND"
        assert (await probe.next("error"))["code"] == "NOT_FOUND"


async def test_a_new_member_comes_online_in_the_team_at_once(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner, newcomer = await factory.user(), await factory.user()
    team = await factory.team(owner)
    watcher = await connect({"token": owner.access_token})
    await watcher.next("authenticated")
    probe = await connect({"token": newcomer.access_token})
    await probe.next("authenticated")

    await factory.member(team["id"], owner, newcomer)
    await watcher.next("member_added")
    assert await until_about(watcher, newcomer, 1) == [
        {"teamId": team["id"], "userId": newcomer.id, "online": True}
    ]
    ack = await probe.call("team_presence", {"teamId": team["id"]})
    assert ack["data"]["online"] == sorted([owner.id, newcomer.id])


def about(probe: SocketProbe, user: TestUser) -> list[Any]:
    """What the `presence_changed` frames a probe received said about `user`, one
    `{teamId, userId, online}` per frame that named them."""
    return changes_about(probe.all("presence_changed"), user.id)


async def until_about(probe: SocketProbe, user: TestUser, count: int) -> list[Any]:
    """Wait until `probe` has heard `count` presence changes about `user`; returns them."""
    deadline = asyncio.get_running_loop().time() + 10
    while len(about(probe, user)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{len(about(probe, user))} of {count} changes: {probe.events}")
        await asyncio.sleep(0.02)
    return about(probe, user)


class Sockets:
    """Authenticated probes on any server; closes them all at the end."""

    def __init__(self) -> None:
        self.probes: list[SocketProbe] = []

    async def open(self, server: LiveServer, user: TestUser) -> SocketProbe:
        probe = SocketProbe(server.url)
        self.probes.append(probe)
        await probe.connect({"token": user.access_token})
        await probe.next("authenticated", timeout=10)
        return probe

    async def close(self) -> None:
        probes, self.probes = self.probes, []
        await asyncio.gather(*(probe.close() for probe in probes))


@pytest.fixture
async def sockets() -> AsyncIterator[Sockets]:
    opened = Sockets()
    yield opened
    await opened.close()


def server_with(path: Path, role: str = "serve", **env: str) -> LiveServer:
    return LiveServer(path, role=role, env={**FAST_TIMINGS, **NO_PRACTICAL_LIMITS, **env})


@pytest.fixture(scope="module")
def slow_window(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose window is long enough for a client to come and go inside it."""
    with server_with(tmp_path_factory.mktemp("window"), PRESENCE_BATCH_MS="1000") as server:
        yield server


@pytest.fixture(scope="module")
def no_window(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with server_with(tmp_path_factory.mktemp("nowindow"), PRESENCE_BATCH_MS="0") as server:
        yield server


async def team_on(server: LiveServer, members: int) -> tuple[int, list[TestUser]]:
    """A team of an owner and `members - 1` members, made through `server`'s API."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        factory = Factory(client)
        users = [await factory.user() for _ in range(members)]
        team = await factory.team(users[0])
        for user in users[1:]:
            await factory.member(team["id"], users[0], user)
    return int(team["id"]), users


async def test_a_member_hears_exactly_once_that_another_came_online(
    connect: ProbeMaker, factory: Factory
) -> None:
    team, _owner, member, watcher, arrival = await _member_comes_online(connect, factory)
    await watcher.quiet("presence_changed", SETTLE)
    assert about(watcher, member) == [{"teamId": team["id"], "userId": member.id, "online": True}]
    # A frame only about a user's own arrival is not sent to them: they know.
    assert [f for f in arrival.all("presence_changed") if f["online"] == [member.id]] == []


async def test_a_user_who_comes_and_goes_within_one_window_is_never_announced(
    slow_window: LiveServer, sockets: Sockets
) -> None:
    team, (owner, flapper, stayer) = await team_on(slow_window, 3)
    watcher = await sockets.open(slow_window, owner)
    await asyncio.sleep(1.2)  # the owner's own arrival has been announced

    flapping = await sockets.open(slow_window, flapper)
    await flapping.close()
    await sockets.open(slow_window, stayer)
    up = await watcher.next("presence_changed", timeout=3)
    assert up == {"teamId": team, "online": [stayer.id], "offline": []}
    await asyncio.sleep(1.2)
    assert about(watcher, flapper) == []
    assert about(watcher, stayer) == [{"teamId": team, "userId": stayer.id, "online": True}]
    ack = await watcher.call("team_presence", {"teamId": team})
    assert ack["data"]["online"] == sorted([owner.id, stayer.id])


async def test_a_member_told_of_a_user_mid_window_hears_when_that_user_leaves_in_it(
    slow_window: LiveServer, sockets: Sockets
) -> None:
    """`team_presence` shows the state now; a flap it caught must not stay on screen."""
    team, (owner, flapper) = await team_on(slow_window, 2)
    watcher = await sockets.open(slow_window, owner)
    await asyncio.sleep(1.2)

    flapping = await sockets.open(slow_window, flapper)
    ack = await watcher.call("team_presence", {"teamId": team})
    assert ack["data"]["online"] == sorted([owner.id, flapper.id])
    await flapping.close()
    assert await until_about(watcher, flapper, 1) == [
        {"teamId": team, "userId": flapper.id, "online": False}
    ]


async def test_without_a_window_every_transition_is_announced_at_once(
    no_window: LiveServer, sockets: Sockets
) -> None:
    team, (owner, flapper) = await team_on(no_window, 2)
    watcher = await sockets.open(no_window, owner)
    await asyncio.sleep(0.2)

    flapping = await sockets.open(no_window, flapper)
    await flapping.close()
    changes = await until_about(watcher, flapper, 2)
    assert changes == [
        {"teamId": team, "userId": flapper.id, "online": True},
        {"teamId": team, "userId": flapper.id, "online": False},
    ]


@pytest.mark.redis
async def test_two_instances_sharing_redis_agree_on_presence_in_the_end(
    tmp_path: Path, redis_url: str, redis_prefix: str, unique: str, sockets: Sockets
) -> None:
    """Remote flips reach a room through the same window as local ones, and converge."""
    shared = {"REDIS_URL": redis_url, "REDIS_PREFIX": f"{redis_prefix}-window-{unique}"}
    x = server_with(tmp_path / "x", **shared, PRESENCE_BATCH_MS="200")
    y = server_with(tmp_path / "y", "gateway", **shared, PRESENCE_BATCH_MS="200", BACKEND_URL=x.url)
    try:
        x.start()
        y.start()
        team, (alice, bob, carol) = await team_on(x, 3)
        watchers = [await sockets.open(x, alice), await sockets.open(y, carol)]
        await asyncio.sleep(0.5)
        up = {"teamId": team, "userId": bob.id, "online": True}

        bob_x = await sockets.open(x, bob)
        flap = await sockets.open(y, bob)
        await flap.close()
        bob_y = await sockets.open(y, bob)
        await bob_x.close()  # still online through Y
        for watcher in watchers:
            assert await until_about(watcher, bob, 1) == [up]
        await asyncio.sleep(0.6)
        everyone = sorted([alice.id, bob.id, carol.id])
        for watcher in watchers:
            assert about(watcher, bob) == [up]
            ack = await watcher.call("team_presence", {"teamId": team})
            assert ack["data"]["online"] == everyone

        await bob_y.close()
        for watcher in watchers:
            assert await until_about(watcher, bob, 2) == [up, {**up, "online": False}]
            ack = await watcher.call("team_presence", {"teamId": team})
            assert ack["data"]["online"] == sorted([alice.id, carol.id])
    finally:
        await sockets.close()
        for server in (y, x):
            server.stop()
    for server in (x, y):
        assert "Traceback" not in server.log_text(tail=None)
