"""Presence per team: `team_presence` and `presence_changed` on first socket up, last down."""

from __future__ import annotations

from tests.factories import Factory
from tests.gateway.conftest import ProbeMaker


async def test_presence_changes_on_first_socket_up_and_last_socket_down(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner, member = await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, member)
    watcher = await connect({"token": owner.access_token})
    await watcher.next("authenticated")

    first = await connect({"token": member.access_token})
    await first.next("authenticated")
    up = await watcher.next("presence_changed")
    assert up == {"teamId": team["id"], "userId": member.id, "online": True}

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
    down = await watcher.next("presence_changed")
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
    assert await watcher.next("presence_changed") == {
        "teamId": team["id"],
        "userId": newcomer.id,
        "online": True,
    }
    ack = await probe.call("team_presence", {"teamId": team["id"]})
    assert ack["data"]["online"] == sorted([owner.id, newcomer.id])
