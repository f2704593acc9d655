"""SPEC §4.3: every change made through the API reaches the team's members, in order."""

from __future__ import annotations

import asyncio

import httpx

from tests.factories import Factory
from tests.gateway.conftest import ProbeMaker
from tests.gateway.live import SocketProbe

COMMON = {"eventId", "teamId", "actorId", "timestamp"}


async def _authed(connect: ProbeMaker, token: str) -> SocketProbe:
    probe = await connect({"token": token})
    await probe.next("authenticated")
    return probe


async def test_task_events_reach_members_with_their_payloads(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    owner, member, outsider = await factory.user(), await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, member)
    watcher = await _authed(connect, member.access_token)
    stranger = await _authed(connect, outsider.access_token)

    task = await factory.task(team["id"], owner, title="Write the docs")
    created = await watcher.next("task_created")
    assert set(created) == COMMON | {"task"}
    assert created["task"] == task
    assert (created["teamId"], created["actorId"]) == (team["id"], owner.id)

    patched = await api.patch(
        f"/api/tasks/{task['id']}",
        json={"status": "done", "version": task["version"]},
        headers=owner.headers,
    )
    assert patched.status_code == 200
    updated = await watcher.next("task_updated")
    assert set(updated) == COMMON | {"task", "changes"}
    assert updated["changes"] == ["status"]
    assert updated["task"]["status"] == "done"

    deleted = await api.delete(f"/api/tasks/{task['id']}", headers=owner.headers)
    assert deleted.status_code == 204
    gone = await watcher.next("task_deleted")
    assert set(gone) == COMMON | {"taskId"}
    assert gone["taskId"] == task["id"]
    assert created["eventId"] < updated["eventId"] < gone["eventId"]

    await stranger.quiet("task_created", 0.2)
    assert not {"task_updated", "task_deleted"} & set(stranger.names)


async def test_team_updated_reaches_members(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await _authed(connect, owner.access_token)
    response = await api.patch(
        f"/api/teams/{team['id']}", json={"name": "Renamed"}, headers=owner.headers
    )
    assert response.status_code == 200
    event = await probe.next("team_updated")
    assert COMMON | {"team"} <= set(event)
    assert event["team"]["name"] == "Renamed"


async def test_events_arrive_in_commit_order(connect: ProbeMaker, factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await _authed(connect, owner.access_token)
    made = await asyncio.gather(*(factory.task(team["id"], owner) for _ in range(15)))
    received = [await probe.next("task_created") for _ in made]
    ids = [event["eventId"] for event in received]
    assert ids == sorted(ids)
    assert {event["task"]["id"] for event in received} == {task["id"] for task in made}


async def test_an_added_member_joins_the_room_on_every_socket_and_hears_it(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner, newcomer = await factory.user(), await factory.user()
    team = await factory.team(owner)
    sockets = [await _authed(connect, newcomer.access_token) for _ in range(2)]
    owner_socket = await _authed(connect, owner.access_token)

    await factory.member(team["id"], owner, newcomer)
    for probe in sockets:
        added = await probe.next("member_added")
        assert set(added) == COMMON | {"user", "role"}
        assert (added["user"]["id"], added["role"]) == (newcomer.id, "member")
    assert (await owner_socket.next("member_added"))["user"]["id"] == newcomer.id

    task = await factory.task(team["id"], owner)
    for probe in sockets:
        assert (await probe.next("task_created"))["task"]["id"] == task["id"]


async def test_a_removed_member_hears_it_then_nothing_more_from_the_team(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    owner, member = await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, member)
    probe = await _authed(connect, member.access_token)
    owner_socket = await _authed(connect, owner.access_token)

    response = await api.delete(
        f"/api/teams/{team['id']}/members/{member.id}", headers=owner.headers
    )
    assert response.status_code == 204
    removed = await probe.next("member_removed")
    assert set(removed) == COMMON | {"userId", "role"}
    assert (removed["userId"], removed["role"]) == (member.id, "member")
    assert (await owner_socket.next("member_removed"))["userId"] == member.id

    await factory.task(team["id"], owner)
    await owner_socket.next("task_created")
    await probe.quiet("task_created", 0.2)
    ack = await probe.call("team_presence", {"teamId": team["id"]})
    assert ack["error"]["code"] == "NOT_FOUND"


async def test_a_deleted_team_is_announced_then_its_room_is_closed(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    owner, member = await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, member)
    probe = await _authed(connect, member.access_token)

    response = await api.delete(f"/api/teams/{team['id']}", headers=owner.headers)
    assert response.status_code == 204
    deleted = await probe.next("team_deleted")
    assert deleted["teamId"] == team["id"]
    ack = await probe.call("team_presence", {"teamId": team["id"]})
    assert ack["error"]["code"] == "NOT_FOUND"


async def test_a_member_added_while_their_socket_authenticates_still_joins_the_room(
    connect: ProbeMaker, factory: Factory
) -> None:
    """The add may commit before, during or after the socket reads its data: all must work."""
    owner = await factory.user()
    for _ in range(5):
        newcomer = await factory.user()
        team = await factory.team(owner)
        probe, _ = await asyncio.gather(
            connect({"token": newcomer.access_token}),
            factory.member(team["id"], owner, newcomer),
        )
        await probe.next("authenticated")
        task = await factory.task(team["id"], owner)
        assert (await probe.next("task_created"))["task"]["id"] == task["id"]
        ack = await probe.call("team_presence", {"teamId": team["id"]})
        assert newcomer.id in ack["data"]["online"]
        await probe.close()
