"""SPEC §4.1: every row of the authentication table, over a real socket."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx
import jwt
import pytest
import websockets

from tests.factories import Factory
from tests.gateway.conftest import ProbeMaker
from tests.gateway.live import SECRET, LiveServer, mint_token
from tests.gateway.raw import frame, next_event, ws_url

EXPIRED_MESSAGE = "Token has expired. Please refresh your session or log in again."


async def test_handshake_token_authenticates_with_the_users_data(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    task = await factory.task(team["id"], owner, assigneeId=owner.id)
    other = await factory.task(team["id"], owner)  # not assigned: not in `tasks`

    probe = await connect({"token": owner.access_token})
    body = await probe.next("authenticated")

    assert set(body) == {
        "success",
        "user",
        "teams",
        "tasks",
        "timestamp",
        "expiresAt",
        "lastEventId",
        "degraded",
    }
    assert body["success"] is True
    assert body["degraded"] is False
    assert body["user"]["id"] == owner.id
    assert [t["id"] for t in body["teams"]] == [team["id"]]
    assert [t["id"] for t in body["tasks"]] == [task["id"]]
    assert other["id"] not in [t["id"] for t in body["tasks"]]
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 24
    expires = jwt.decode(owner.access_token, options={"verify_signature": False})["exp"]
    assert body["expiresAt"] == time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(expires))
    assert isinstance(body["lastEventId"], int) and body["lastEventId"] >= other["id"] - 100


async def test_authenticate_event_answers_through_the_ack_too(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    probe = await connect()
    ack = await probe.call("authenticate", {"token": user.access_token})
    assert ack["ok"] is True
    assert ack["data"]["success"] is True
    assert ack["data"]["user"]["id"] == user.id
    assert (await probe.next("authenticated"))["user"]["id"] == user.id


async def test_no_token_within_auth_timeout_is_told_to_log_in_then_disconnected(
    connect: ProbeMaker,
) -> None:
    probe = await connect()
    error = await probe.next("authentication_error", timeout=5)
    assert error["code"] == "TOKEN_MISSING"
    assert error["action"] == "LOGIN"
    assert isinstance(error["message"], str) and error["message"]
    await probe.gone()


async def test_events_before_authenticating_answer_token_missing(connect: ProbeMaker) -> None:
    probe = await connect()
    ack = await probe.call("team_presence", {"teamId": 1})
    assert ack == {
        "ok": False,
        "error": {"code": "TOKEN_MISSING", "message": ack["error"]["message"]},
    }
    assert (await probe.next("error"))["code"] == "TOKEN_MISSING"
    assert probe.client.connected


async def test_expired_handshake_token_gets_the_exact_error_and_a_grace_period(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    probe = await connect({"token": mint_token(user.id, ttl=-30)})
    error = await probe.next("authentication_error")
    assert error == {
        "message": EXPIRED_MESSAGE,
        "code": "TOKEN_EXPIRED",
        "action": "REFRESH_TOKEN",
        "retryAfter": 2000,
    }
    await asyncio.sleep(0.5)
    assert probe.client.connected  # kept open for AUTH_GRACE
    await probe.gone(timeout=5)  # and closed after it


async def test_a_valid_token_during_the_grace_period_authenticates(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    probe = await connect({"token": mint_token(user.id, ttl=-30)})
    await probe.next("authentication_error")
    ack = await probe.call("authenticate", {"token": user.access_token})
    assert ack["ok"] is True
    await asyncio.sleep(1.7)  # past AUTH_GRACE: the grace timer was cancelled
    assert probe.client.connected


def _forged(user_id: int, **changes: object) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "type": "access", "iat": now, "exp": now + 600}
    claims.update(changes)
    return jwt.encode(claims, SECRET, algorithm="HS256")


INVALID_TOKENS: dict[str, Callable[[int], str]] = {
    "bad signature": lambda uid: jwt.encode(
        {"sub": str(uid), "type": "access", "iat": int(time.time()), "exp": 2**31},
        "another-secret-that-is-long-enough-0123456789",
        algorithm="HS256",
    ),
    "malformed": lambda uid: "not.a.jwt",
    "garbage": lambda uid: "x" * 300,
    "alg none": lambda uid: jwt.encode(
        {"sub": str(uid), "type": "access", "iat": int(time.time()), "exp": 2**31},
        "",
        algorithm="none",
    ),
    "wrong algorithm": lambda uid: jwt.encode(
        {"sub": str(uid), "type": "access", "iat": int(time.time()), "exp": 2**31},
        SECRET,
        algorithm="HS384",
    ),
    "refresh token": lambda uid: _forged(uid, type="refresh", fam=str(uuid.uuid4())),
    "unknown user": lambda uid: _forged(10_000_000),
    "no sub": lambda uid: jwt.encode(
        {"type": "access", "iat": int(time.time()), "exp": 2**31}, SECRET, algorithm="HS256"
    ),
}


@pytest.mark.parametrize("kind", sorted(INVALID_TOKENS))
async def test_invalid_tokens_are_told_to_log_in_and_disconnected(
    connect: ProbeMaker, factory: Factory, kind: str
) -> None:
    user = await factory.user()
    probe = await connect({"token": INVALID_TOKENS[kind](user.id)})
    error = await probe.next("authentication_error")
    assert error["code"] == "TOKEN_INVALID", kind
    assert error["action"] == "LOGIN"
    assert "retryAfter" not in error
    await probe.gone()


async def test_invalid_token_via_authenticate_answers_the_ack_before_disconnecting(
    connect: ProbeMaker,
) -> None:
    probe = await connect()
    ack = await probe.call("authenticate", {"token": "not.a.jwt"})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "TOKEN_INVALID"
    assert (await probe.next("authentication_error"))["code"] == "TOKEN_INVALID"
    await probe.gone()


async def test_revoked_token_is_refused(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    user = await factory.user()
    old = user.access_token
    await asyncio.sleep(0.01)
    response = await api.post("/api/auth/logout-all", headers=user.headers)
    assert response.status_code == 204
    probe = await connect({"token": old})
    error = await probe.next("authentication_error")
    assert (error["code"], error["action"]) == ("TOKEN_REVOKED", "LOGIN")
    await probe.gone()


async def test_a_token_that_already_authenticated_is_refused_once_revoked(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    """The server remembers verified tokens; revocation is checked on every use regardless."""
    user = await factory.user()
    first = await connect({"token": user.access_token})
    await first.next("authenticated")
    await first.close()
    again = await connect({"token": user.access_token})
    await again.next("authenticated")
    await again.close()
    await asyncio.sleep(0.01)
    response = await api.post("/api/auth/logout-all", headers=user.headers)
    assert response.status_code == 204
    probe = await connect({"token": user.access_token})
    error = await probe.next("authentication_error")
    assert (error["code"], error["action"]) == ("TOKEN_REVOKED", "LOGIN")
    await probe.gone()


async def test_logout_everywhere_disconnects_open_sockets_within_a_second(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    user = await factory.user()
    bystander = await factory.user()
    sockets = [await connect({"token": user.access_token}) for _ in range(2)]
    other = await connect({"token": bystander.access_token})
    for probe in [*sockets, other]:
        await probe.next("authenticated")

    started = time.monotonic()
    response = await api.post("/api/auth/logout-all", headers=user.headers)
    assert response.status_code == 204
    for probe in sockets:
        error = await probe.next("authentication_error", timeout=1)
        assert (error["code"], error["action"]) == ("TOKEN_REVOKED", "LOGIN")
        await probe.gone(timeout=1)
    assert time.monotonic() - started < 1.0
    assert other.client.connected
    assert other.all("authentication_error") == []


async def test_a_token_issued_after_logout_everywhere_still_works(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    user = await factory.user()
    await api.post("/api/auth/logout-all", headers=user.headers)
    fresh = await factory.login(user.email)
    probe = await connect({"token": fresh["access_token"]})
    assert (await probe.next("authenticated"))["user"]["id"] == user.id


async def test_connection_limit_counts_only_authenticated_sockets(
    connect: ProbeMaker, factory: Factory, live: LiveServer
) -> None:
    user = await factory.user()
    limit = int(live.env["MAX_CONNECTIONS_PER_USER"])
    # Sockets waiting to authenticate or in their expiry grace do not count.
    waiting = await connect()
    expired = await connect({"token": mint_token(user.id, ttl=-30)})
    await expired.next("authentication_error")
    sockets = [await connect({"token": user.access_token}) for _ in range(limit)]
    for probe in sockets:
        await probe.next("authenticated")

    extra = await connect({"token": user.access_token})
    error = await extra.next("authentication_error")
    assert (error["code"], error["action"]) == ("CONNECTION_LIMIT", "RETRY")
    await extra.gone()
    assert waiting.client.connected and expired.client.connected

    await sockets[0].close()
    await asyncio.sleep(0.2)
    again = await connect({"token": user.access_token})
    await again.next("authenticated")


async def test_a_bearer_header_in_the_handshake_authenticates_too(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    probe = await connect(headers={"Authorization": f"Bearer {user.access_token}"})
    assert (await probe.next("authenticated"))["user"]["id"] == user.id


async def test_a_second_connect_on_the_same_session_still_reads_the_bearer_header(
    factory: Factory, live: LiveServer
) -> None:
    """The handshake request's headers are dropped once the CONNECT is answered (memory per
    connection), but not the token header: a client that disconnects the namespace and
    connects again on the same Engine.IO session is authenticated by it again."""
    user = await factory.user()
    headers = {"Authorization": f"Bearer {user.access_token}", "User-Agent": "probe/1.0"}
    async with websockets.connect(ws_url(live), additional_headers=headers) as ws:
        assert (await frame(ws)).startswith("0{")
        for _ in range(2):
            await ws.send("40")
            assert (await frame(ws)).startswith("40{")
            name, data = await next_event(ws)
            assert (name, data["user"]["id"]) == ("authenticated", user.id)
            await ws.send("41")  # leave the namespace; the Engine.IO session stays


async def test_a_malformed_handshake_is_reported_and_waits_for_authenticate(
    connect: ProbeMaker, factory: Factory
) -> None:
    user = await factory.user()
    probe = await connect({"token": 12345, "lastEventId": "soon"})
    error = await probe.next("error")
    assert error["code"] == "BAD_REQUEST"
    ack = await probe.call("authenticate", {"token": user.access_token})
    assert ack["ok"] is True


async def test_an_expired_token_sent_on_a_live_socket_does_not_cut_it_off(
    connect: ProbeMaker, factory: Factory
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    probe = await connect({"token": owner.access_token})
    await probe.next("authenticated")
    ack = await probe.call("authenticate", {"token": mint_token(owner.id, ttl=-30)})
    assert ack["error"]["code"] == "TOKEN_EXPIRED"
    assert (await probe.next("authentication_error"))["code"] == "TOKEN_EXPIRED"
    task = await factory.task(team["id"], owner)
    assert (await probe.next("task_created"))["task"]["id"] == task["id"]


async def test_clients_that_upgrade_from_polling_get_the_same_answers(
    connect: ProbeMaker, factory: Factory
) -> None:
    # Long-polling alone is driven by the official client in tests/interop.
    user = await factory.user()
    probe = await connect({"token": user.access_token}, transports=["polling", "websocket"])
    assert (await probe.next("authenticated"))["user"]["id"] == user.id
    rejected = await connect({"token": "not.a.jwt"}, transports=["polling", "websocket"])
    assert (await rejected.next("authentication_error"))["code"] == "TOKEN_INVALID"
    await rejected.gone()


async def test_logout_disconnects_the_sockets_of_that_login_only(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    """SPEC §3: a revoked family's access tokens stop at once, open sockets included."""
    user = await factory.user()
    other_login = await factory.login(user.email)  # another family of the same user
    revoked = await connect({"token": user.access_token})
    kept = await connect({"token": other_login["access_token"]})
    for probe in (revoked, kept):
        await probe.next("authenticated")

    started = time.monotonic()
    out = await api.post("/api/auth/logout", json={"refresh_token": user.refresh_token})
    assert out.status_code == 204
    error = await revoked.next("authentication_error", timeout=1)
    assert (error["code"], error["action"]) == ("TOKEN_REVOKED", "LOGIN")
    await revoked.gone(timeout=1)
    assert time.monotonic() - started < 1.0
    assert kept.client.connected and kept.all("authentication_error") == []
    # The revoked token cannot come back either.
    again = await connect({"token": user.access_token})
    assert (await again.next("authentication_error"))["code"] == "TOKEN_REVOKED"


async def test_refresh_token_reuse_disconnects_the_familys_sockets(
    connect: ProbeMaker, factory: Factory, api: httpx.AsyncClient
) -> None:
    """The live server has no reuse grace: the second redemption is reuse at once."""
    user = await factory.user()
    bystander_login = await factory.login(user.email)
    probe = await connect({"token": user.access_token})
    bystander = await connect({"token": bystander_login["access_token"]})
    for socket in (probe, bystander):
        await socket.next("authenticated")
    rotated = await api.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert rotated.status_code == 200
    reused = await api.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert reused.json()["error"]["code"] == "REFRESH_TOKEN_REUSED"
    error = await probe.next("authentication_error", timeout=1)
    assert (error["code"], error["action"]) == ("TOKEN_REVOKED", "LOGIN")
    await probe.gone(timeout=1)
    assert bystander.client.connected
    # The access token the thief got from the first rotation is refused too.
    stolen = await connect({"token": rotated.json()["access_token"]})
    assert (await stolen.next("authentication_error"))["code"] == "TOKEN_REVOKED"
