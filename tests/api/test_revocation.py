"""SPEC §3: revoking a refresh family stops its access tokens at once (REST; sockets in
tests/gateway/test_auth.py), in this process, after a restart, and in every other process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from huddle.api.app import create_api
from huddle.config import Settings
from tests.api.conftest import TEST_SECRET
from tests.api.test_auth import past_the_grace
from tests.factories import Factory, TestUser


def claims(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, TEST_SECRET, algorithms=["HS256"]))


async def me(client: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await client.get("/api/users/me", headers={"Authorization": f"Bearer {access_token}"})


def revoked(response: httpx.Response) -> bool:
    return response.status_code == 401 and response.json()["error"]["code"] == "TOKEN_REVOKED"


async def test_access_tokens_carry_their_refresh_family(factory: Factory) -> None:
    user = await factory.user()
    assert claims(user.access_token)["fam"] == claims(user.refresh_token)["fam"]
    rotated = await factory.client.post(
        "/api/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    pair = rotated.json()
    assert claims(pair["access_token"])["fam"] == claims(user.refresh_token)["fam"]


async def test_logout_stops_the_familys_access_tokens_at_once(factory: Factory) -> None:
    user = await factory.user()
    other_login = await factory.login(user.email)
    assert (await me(factory.client, user.access_token)).status_code == 200  # now cached
    out = await factory.client.post("/api/auth/logout", json={"refresh_token": user.refresh_token})
    assert out.status_code == 204
    assert revoked(await me(factory.client, user.access_token))
    # Another login of the same user is another family: untouched.
    assert (await me(factory.client, other_login["access_token"])).status_code == 200


async def test_reuse_stops_every_access_token_of_the_family_at_once(factory: Factory) -> None:
    user = await factory.user()
    other_login = await factory.login(user.email)
    client = factory.client
    rotated = (
        await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    ).json()
    assert (await me(client, rotated["access_token"])).status_code == 200
    await past_the_grace(factory, user.refresh_token)
    reused = await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert reused.json()["error"]["code"] == "REFRESH_TOKEN_REUSED"
    # The thief's and the owner's access tokens of that family, both gone at once.
    assert revoked(await me(client, user.access_token))
    assert revoked(await me(client, rotated["access_token"]))
    assert (await me(client, other_login["access_token"])).status_code == 200


@asynccontextmanager
async def api_client(settings: Settings, ip: str = "198.51.100.30") -> AsyncIterator[Factory]:
    app = create_api(settings)
    async with LifespanManager(app, startup_timeout=30):
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://huddle.test") as c:
            yield Factory(c, app.state.runtime)


async def test_a_restarted_process_still_refuses_a_revoked_family(settings: Settings) -> None:
    async with api_client(settings) as first:
        user = await first.user()
        other_login = await first.login(user.email)
        out = await first.client.post(
            "/api/auth/logout", json={"refresh_token": user.refresh_token}
        )
        assert out.status_code == 204
    async with api_client(settings) as restarted:  # loads the revocations from the database
        assert revoked(await me(restarted.client, user.access_token))
        assert (await me(restarted.client, other_login["access_token"])).status_code == 200


@pytest.mark.redis
async def test_every_other_process_hears_of_it_through_the_bus(
    settings: Settings, redis_url: str, redis_prefix: str, unique: str
) -> None:
    shared = settings.model_copy(
        update={"redis_url": redis_url, "redis_prefix": f"{redis_prefix}-{unique}"}
    )
    async with api_client(shared) as first, api_client(shared) as second:
        user: TestUser = await first.user()
        other_login = await first.login(user.email)
        assert (await me(second.client, user.access_token)).status_code == 200  # cached there
        await first.client.post("/api/auth/logout", json={"refresh_token": user.refresh_token})
        deadline = time.monotonic() + 5
        while not revoked(response := await me(second.client, user.access_token)):
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.05)
        assert (await me(second.client, other_login["access_token"])).status_code == 200
