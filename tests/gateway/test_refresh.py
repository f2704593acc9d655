"""SPEC §4.1-4.2: expiry mid-connection, then `refresh_token` in both forms."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import jwt

from tests.factories import Factory, TestUser
from tests.gateway.conftest import ProbeMaker
from tests.gateway.live import SECRET, SocketProbe, mint_token

EXPIRED_MESSAGE = "Token has expired. Please refresh your session or log in again."


async def _short_lived(connect: ProbeMaker, user: TestUser, ttl: float = 1.5) -> SocketProbe:
    """A socket authenticated with a token that expires in `ttl` seconds."""
    probe = await connect({"token": mint_token(user.id, ttl=ttl)})
    await probe.next("authenticated")
    return probe


async def test_expiry_mid_connection_warns_then_expires_and_sends_no_team_data(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await _short_lived(connect, owner)
    expires_at = (probe.all("authenticated")[0])["expiresAt"]

    warning = await probe.next("token_expiring", timeout=4)
    assert warning == {"expiresAt": expires_at}
    error = await probe.next("authentication_error", timeout=4)
    assert error == {
        "message": EXPIRED_MESSAGE,
        "code": "TOKEN_EXPIRED",
        "action": "REFRESH_TOKEN",
        "retryAfter": 2000,
    }
    # Expired: out of the team's room.
    await factory.task(team["id"], owner)
    await probe.quiet("task_created", 0.3)
    ack = await probe.call("team_presence", {"teamId": team["id"]})
    assert ack["error"]["code"] == "TOKEN_EXPIRED"
    await probe.gone(timeout=4)  # AUTH_GRACE without a refresh


async def test_refresh_with_a_refresh_token_rotates_reauthenticates_and_replays_what_was_missed(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await _short_lived(connect, owner)
    await probe.next("authentication_error", timeout=4)
    missed = [await factory.task(team["id"], owner, title=f"missed {n}") for n in range(2)]

    ack = await probe.call("refresh_token", {"refreshToken": owner.refresh_token})

    assert ack["ok"] is True
    refreshed = await probe.next("token_refreshed")
    assert ack["data"] == refreshed
    assert set(refreshed) == {"accessToken", "refreshToken", "expiresIn", "expiresAt"}
    assert refreshed["refreshToken"] != owner.refresh_token
    assert refreshed["expiresIn"] > 60
    authenticated = await probe.next("authenticated")
    assert [t["id"] for t in authenticated["teams"]] == [team["id"]]
    replayed = [await probe.next("task_created") for _ in missed]
    assert [e["task"]["id"] for e in replayed] == [t["id"] for t in missed]
    done = await probe.next("sync_complete")
    assert done["lastEventId"] >= replayed[-1]["eventId"]
    order = probe.names
    assert order.index("token_refreshed") < order.index("authenticated", 1)
    assert order.index("sync_complete") > order.index("task_created")

    # Live again, and the new refresh token works over REST while the old one is spent.
    live_task = await factory.task(team["id"], owner)
    assert (await probe.next("task_created"))["task"]["id"] == live_task["id"]
    reused = await api.post("/api/auth/refresh", json={"refresh_token": owner.refresh_token})
    assert reused.status_code == 401


async def test_refresh_with_a_renewed_access_token_of_the_same_user(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await _short_lived(connect, owner)
    await probe.next("authentication_error", timeout=4)
    missed = await factory.task(team["id"], owner)
    renewed = mint_token(owner.id, ttl=600)

    ack = await probe.call("refresh_token", {"token": renewed})

    assert ack["ok"] is True
    assert ack["data"]["accessToken"] == renewed
    assert ack["data"]["refreshToken"] is None
    assert 590 <= ack["data"]["expiresIn"] <= 600
    await probe.next("token_refreshed")
    await probe.next("authenticated")
    assert (await probe.next("task_created"))["task"]["id"] == missed["id"]
    await probe.next("sync_complete")
    await asyncio.sleep(1.7)  # past AUTH_GRACE: the grace timer is gone
    assert probe.client.connected


async def test_refresh_before_expiry_keeps_the_socket_in_its_rooms(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await connect({"token": owner.access_token})
    await probe.next("authenticated")

    ack = await probe.call("refresh_token", {"refreshToken": owner.refresh_token})
    assert ack["ok"] is True
    await probe.next("authenticated")
    task = await factory.task(team["id"], owner)
    assert (await probe.next("task_created"))["task"]["id"] == task["id"]
    assert probe.all("sync_complete") == []  # nothing was missed


async def test_a_renewed_token_of_another_user_is_refused(
    connect: ProbeMaker, factory: Factory
) -> None:
    user, stranger = await factory.user(), await factory.user()
    probe = await connect({"token": user.access_token})
    await probe.next("authenticated")
    ack = await probe.call("refresh_token", {"token": stranger.access_token})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "TOKEN_INVALID"
    error = await probe.next("authentication_error")
    assert (error["code"], error["action"]) == ("TOKEN_INVALID", "LOGIN")
    await probe.gone()


async def test_an_invalid_refresh_token_is_told_to_log_in_and_disconnected(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    probe = await connect({"token": mint_token(user.id, ttl=-30)})
    await probe.next("authentication_error")
    ack = await probe.call("refresh_token", {"refreshToken": "nope"})
    assert ack == {
        "ok": False,
        "error": {"code": "REFRESH_TOKEN_INVALID", "message": ack["error"]["message"]},
    }
    error = await probe.next("authentication_error")
    assert (error["code"], error["action"]) == ("REFRESH_TOKEN_INVALID", "LOGIN")
    await probe.gone()


async def test_a_reused_refresh_token_is_reported_as_reused(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    user = await factory.user()
    spent = user.refresh_token
    response = await api.post("/api/auth/refresh", json={"refresh_token": spent})
    assert response.status_code == 200
    probe = await connect({"token": user.access_token})
    await probe.next("authenticated")
    ack = await probe.call("refresh_token", {"refreshToken": spent})
    assert ack["error"]["code"] == "REFRESH_TOKEN_REUSED"
    error = await probe.next("authentication_error")
    assert (error["code"], error["action"]) == ("REFRESH_TOKEN_REUSED", "LOGIN")
    await probe.gone()


async def test_an_expired_refresh_token_is_reported_as_expired(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    now = int(time.time())
    expired = jwt.encode(
        {
            "sub": str(user.id),
            "type": "refresh",
            "fam": str(uuid.uuid4()),
            "iat": now - 100,
            "exp": now - 50,
            "jti": uuid.uuid4().hex,
        },
        SECRET,
        algorithm="HS256",
    )
    probe = await connect({"token": mint_token(user.id, ttl=-30)})
    await probe.next("authentication_error")
    ack = await probe.call("refresh_token", {"refreshToken": expired})
    assert ack["error"]["code"] == "REFRESH_TOKEN_EXPIRED"
    error = await probe.next("authentication_error")
    assert (error["code"], error["action"]) == ("REFRESH_TOKEN_EXPIRED", "LOGIN")
    await probe.gone()


async def test_refresh_from_a_socket_that_never_authenticated(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    probe = await connect()
    ack = await probe.call("refresh_token", {"refreshToken": user.refresh_token})
    assert ack["ok"] is True
    assert (await probe.next("authenticated"))["user"]["id"] == user.id
