"""POST /api/internal/bootstrap: the gateways' batched read, and its service credential."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from huddle.api.app import create_api
from huddle.config import Settings
from huddle.db.models import Event
from huddle.db.session import create_engine
from huddle.runtime import Runtime
from tests.api.conftest import TEST_SECRET, make_settings
from tests.factories import Factory, TestUser

URL = "/api/internal/bootstrap"


def service(settings: Settings) -> dict[str, str]:
    credential = settings.service_credential()
    assert credential is not None
    return {"Authorization": f"Service {credential}"}


def session_of(user: TestUser) -> dict[str, Any]:
    payload = jwt.decode(user.access_token, TEST_SECRET, algorithms=["HS256"])
    return {"userId": user.id, "issuedAt": payload["iat"], "familyId": payload.get("fam")}


async def rest_view(client: httpx.AsyncClient, user: TestUser) -> dict[str, Any]:
    """What the three per-user REST calls answer (the gateway's old path)."""
    me = (await client.get("/api/users/me", headers=user.headers)).json()
    teams = (await client.get(f"/api/users/{user.id}/teams?limit=100", headers=user.headers)).json()
    tasks = (await client.get(f"/api/users/{user.id}/tasks?limit=100", headers=user.headers)).json()
    return {"userId": user.id, "user": me, "teams": teams["items"], "tasks": tasks["items"]}


async def test_one_request_answers_each_session_as_the_rest_routes_do(
    factory: Factory, settings: Settings
) -> None:
    client = factory.client
    alice, bob, carol, gone = [await factory.user() for _ in range(4)]
    team = await factory.team(alice)
    other = await factory.team(bob)
    await factory.member(team["id"], alice, bob)
    await factory.member(other["id"], bob, carol)
    await factory.task(team["id"], alice, assigneeId=bob.id)
    await factory.task(other["id"], bob, assigneeId=bob.id)
    await factory.task(other["id"], bob, assigneeId=carol.id)
    await factory.task(team["id"], alice, assigneeId=alice.id)
    expected = [await rest_view(client, u) for u in (alice, bob, carol)]
    # `gone` logs out everywhere: a token from before is refused, as over REST.
    assert (await client.post("/api/auth/logout-all", headers=gone.headers)).status_code == 204
    body = {
        "sessions": [
            session_of(alice),
            session_of(bob),
            session_of(carol),
            session_of(gone),
            {"userId": 999_999, "issuedAt": 1.0, "familyId": None},
            session_of(bob),  # the same user twice: answered twice
        ]
    }
    response = await client.post(URL, json=body, headers=service(settings))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[:3] == expected
    assert results[3]["userId"] == gone.id and results[3]["error"]["code"] == "TOKEN_REVOKED"
    assert results[4] == {
        "userId": 999_999,
        "error": {"code": "TOKEN_INVALID", "message": "Token is invalid."},
    }
    assert results[5] == expected[1]
    # The log's newest id, read before the data: a gateway does not send these sockets
    # again what their data already reflects.
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            head = (await connection.execute(select(func.max(Event.id)))).scalar_one()
    finally:
        await engine.dispose()
    assert response.json()["head"] == head


async def test_a_revoked_family_is_refused(factory: Factory, settings: Settings) -> None:
    user = await factory.user()
    claims = session_of(user)
    out = await factory.client.post("/api/auth/logout", json={"refresh_token": user.refresh_token})
    assert out.status_code == 204
    response = await factory.client.post(
        URL, json={"sessions": [claims]}, headers=service(settings)
    )
    assert response.json()["results"][0]["error"]["code"] == "TOKEN_REVOKED"


async def test_only_the_service_credential_opens_it_and_it_opens_nothing_else(
    factory: Factory, settings: Settings
) -> None:
    client = factory.client
    user = await factory.user(admin=True)
    body = {"sessions": [session_of(user)]}
    # A user's token, however privileged: refused with a code of its own.
    response = await client.post(URL, json=body, headers=user.headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "SERVICE_CREDENTIAL_REQUIRED"
    for headers in (
        {},
        {"Authorization": "Service wrong"},
        {"Authorization": f"Service {user.access_token}"},
        {"Authorization": f"Service {TEST_SECRET}"},
    ):
        response = await client.post(URL, json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "SERVICE_CREDENTIAL_INVALID"
    # The credential on a user route, either way it could be sent: no access.
    credential = settings.service_credential()
    for headers in ({"Authorization": f"Bearer {credential}"}, service(settings)):
        response = await client.get("/api/users/me", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] in ("TOKEN_INVALID", "TOKEN_MISSING")
        assert credential not in response.text


async def test_batches_are_1_to_100_sessions(factory: Factory, settings: Settings) -> None:
    one = {"userId": 1, "issuedAt": 1.0, "familyId": None}
    for sessions in ([], [one] * 101, [{**one, "userId": "1"}], [{**one, "extra": 1}]):
        response = await factory.client.post(
            URL, json={"sessions": sessions}, headers=service(settings)
        )
        assert response.status_code == 422, sessions
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    response = await factory.client.post(
        URL, json={"sessions": [one] * 100}, headers=service(settings)
    )
    assert response.status_code == 200
    assert len(response.json()["results"]) == 100


async def test_bootstrap_many_keeps_each_users_own_limits(
    factory: Factory, runtime: Runtime
) -> None:
    alice, bob = await factory.user(), await factory.user()
    teams = [await factory.team(alice) for _ in range(3)]
    for team in teams:
        await factory.member(team["id"], alice, bob)
        for who in (alice, bob, alice):
            await factory.task(team["id"], alice, assigneeId=who.id)
    many = await runtime.users.bootstrap_many([bob.id, alice.id, 999], max_teams=2, max_tasks=4)
    assert set(many) == {alice.id, bob.id}
    for user in (alice, bob):
        one = await runtime.users.bootstrap(user.id, max_teams=2, max_tasks=4)
        assert (many[user.id].teams, many[user.id].tasks) == (one.teams, one.tasks)
        assert many[user.id].user == one.user
    assert len(many[alice.id].tasks) == 4 and len(many[bob.id].tasks) == 3


async def test_bootstrap_many_answers_every_batch_size_alike(
    factory: Factory, runtime: Runtime
) -> None:
    """Batches of every size around the fixed `IN` shapes (padded by repeating an id),
    and past the largest (several reads), answer each user as a lone read does."""
    owner = await factory.user()
    team = await factory.team(owner)
    users = [await factory.user() for _ in range(140)]
    for user in users:
        await factory.member(team["id"], owner, user)
    for user in users[::7]:
        await factory.task(team["id"], owner, assigneeId=user.id)
    lone = {
        user.id: await runtime.users.bootstrap(user.id, max_teams=5, max_tasks=5) for user in users
    }
    for size in (2, 3, 4, 5, 9, 17, 33, 64, 65, 128, 129, 140):
        chosen = users[:size]
        many = await runtime.users.bootstrap_many(
            [u.id for u in reversed(chosen)] + [2_000_000_000], max_teams=5, max_tasks=5
        )
        assert set(many) == {u.id for u in chosen}, size
        for user in chosen:
            assert many[user.id] == lone[user.id], (size, user.id)


@pytest.mark.parametrize("db_url", [None])
async def test_no_credential_no_route(tmp_path: Path, db_url: None) -> None:
    """Asymmetric keys and no SERVICE_TOKEN: the route is absent (a gateway falls back)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "key.pem", tmp_path / "pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = make_settings(
        tmp_path,
        jwt_algorithm="ES256",
        jwt_private_key_file=private,
        jwt_public_key_file=public,
    )
    assert settings.service_credential() is None
    app = create_api(settings)
    async with LifespanManager(app, startup_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://huddle.test") as c:
            response = await c.post(URL, json={"sessions": []}, headers={"Authorization": "x"})
    assert response.status_code == 404
