"""Register, login, refresh rotation with reuse detection, logout, logout everywhere."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import httpx
import jwt
from asgi_lifespan import LifespanManager
from sqlalchemy import update

from huddle.api.app import create_api
from huddle.clock import utcnow
from huddle.config import Settings
from huddle.db.models import RefreshToken
from tests.api.conftest import TEST_SECRET
from tests.factories import PASSWORD, Factory


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_register_returns_the_public_user_without_secrets(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/register",
        json={"email": "Ada@Example.COM", "password": PASSWORD, "name": "Ada"},
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "name", "isAdmin", "createdAt"}
    assert body["email"] == "ada@example.com"
    assert body["isAdmin"] is False
    assert body["createdAt"].endswith("Z")


async def test_email_is_taken_case_insensitively(client: httpx.AsyncClient) -> None:
    first = {"email": "bob@example.com", "password": PASSWORD, "name": "Bob"}
    assert (await client.post("/api/auth/register", json=first)).status_code == 201
    again = {**first, "email": "BOB@example.com"}
    response = await client.post("/api/auth/register", json=again)
    assert response.status_code == 409
    assert code(response) == "EMAIL_TAKEN"


async def test_register_rejects_short_password_and_bad_email(client: httpx.AsyncClient) -> None:
    short = await client.post(
        "/api/auth/register", json={"email": "c@example.com", "password": "1234567", "name": "C"}
    )
    bad = await client.post(
        "/api/auth/register", json={"email": "not-an-email", "password": PASSWORD, "name": "C"}
    )
    for response in (short, bad):
        assert response.status_code == 422
        assert code(response) == "VALIDATION_ERROR"
        assert PASSWORD not in response.text and "1234567" not in response.text


async def test_login_issues_a_bearer_pair_with_the_spec_claims(factory: Factory) -> None:
    user = await factory.user()
    response = await factory.client.post(
        "/api/auth/login", json={"email": user.email.upper(), "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(user.id)
    assert claims["type"] == "access"
    assert {"iat", "exp", "jti"} <= set(claims)
    assert claims["exp"] - int(claims["iat"]) == 900
    refresh = jwt.decode(body["refresh_token"], TEST_SECRET, algorithms=["HS256"])
    assert refresh["type"] == "refresh" and refresh["fam"]


async def test_login_accepts_the_oauth2_password_form(factory: Factory) -> None:
    user = await factory.user()
    response = await factory.client.post(
        "/api/auth/login", data={"username": user.email, "password": PASSWORD}
    )
    assert response.status_code == 200
    assert response.json()["access_token"]


async def test_wrong_password_and_unknown_email_look_the_same(factory: Factory) -> None:
    user = await factory.user()
    wrong = await factory.client.post(
        "/api/auth/login", json={"email": user.email, "password": "wrong-password"}
    )
    unknown = await factory.client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong-password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert code(wrong) == "INVALID_CREDENTIALS"


async def past_the_grace(factory: Factory, refresh_token: str) -> None:
    """Move a spent refresh token's rotation a minute into the past (beyond the reuse grace)."""
    assert factory.runtime is not None
    async with factory.runtime.db.unit() as unit:
        await unit.session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == hashlib.sha256(refresh_token.encode()).hexdigest())
            .values(used_at=utcnow() - timedelta(seconds=60))
        )


def family(token: str) -> str:
    return str(jwt.decode(token, TEST_SECRET, algorithms=["HS256"])["fam"])


async def test_refresh_rotates_and_reuse_revokes_the_family(factory: Factory) -> None:
    user = await factory.user()
    client = factory.client
    first = await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != user.refresh_token
    assert (await client.get("/api/users/me", headers=_bearer(rotated))).status_code == 200

    await past_the_grace(factory, user.refresh_token)
    reused = await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert reused.status_code == 401
    assert code(reused) == "REFRESH_TOKEN_REUSED"
    # The whole family is gone: the token rotated in good faith no longer works either.
    child = await client.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert child.status_code == 401
    assert code(child) in {"REFRESH_TOKEN_INVALID", "REFRESH_TOKEN_REUSED"}


async def test_refresh_families_are_independent(factory: Factory) -> None:
    user = await factory.user()
    other_login = await factory.login(user.email)
    await factory.client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    await past_the_grace(factory, user.refresh_token)
    await factory.client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    unaffected = await factory.client.post(
        "/api/auth/refresh", json={"refresh_token": other_login["refresh_token"]}
    )
    assert unaffected.status_code == 200


async def test_two_tabs_refreshing_at_once_both_stay_signed_in(factory: Factory) -> None:
    """SPEC §3 REFRESH_REUSE_GRACE: concurrent redemptions of one token all get a valid
    pair of the same family, and none of them revokes it (PostgreSQL row locks included)."""
    user = await factory.user()
    responses = await asyncio.gather(
        *(
            factory.client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
            for _ in range(5)
        )
    )
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    pairs = [r.json() for r in responses]
    assert len({p["refresh_token"] for p in pairs}) == 5
    assert {family(p["refresh_token"]) for p in pairs} == {family(user.refresh_token)}
    for pair in pairs:
        me = await factory.client.get("/api/users/me", headers=_bearer(pair))
        assert me.status_code == 200
        again = await factory.client.post(
            "/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert again.status_code == 200, again.text


async def test_a_token_presented_again_within_the_grace_gets_a_pair_of_its_family(
    factory: Factory,
) -> None:
    user = await factory.user()
    client = factory.client
    first = await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    second = await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert first.status_code == second.status_code == 200
    assert first.json()["refresh_token"] != second.json()["refresh_token"]
    assert family(second.json()["refresh_token"]) == family(user.refresh_token)
    # The first tab's pair still works: nothing was revoked.
    assert (await client.get("/api/users/me", headers=_bearer(first.json()))).status_code == 200
    # Past the grace it is reuse again, and the whole family goes.
    await past_the_grace(factory, user.refresh_token)
    reused = await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert code(reused) == "REFRESH_TOKEN_REUSED"
    for pair in (first.json(), second.json()):
        refreshed = await client.post(
            "/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert refreshed.status_code == 401


async def test_no_grace_for_a_revoked_family(factory: Factory) -> None:
    user = await factory.user()
    client = factory.client
    assert (
        await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    ).status_code == 200
    assert (
        await client.post("/api/auth/logout", json={"refresh_token": user.refresh_token})
    ).status_code == 204
    again = await client.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert again.status_code == 401


async def test_the_grace_is_a_setting(settings: Settings) -> None:
    app = create_api(settings.model_copy(update={"refresh_reuse_grace": 0}))
    async with LifespanManager(app), _client_from(app, "198.51.100.20") as client:
        user = await Factory(client, app.state.runtime).user()
        body = {"refresh_token": user.refresh_token}
        assert (await client.post("/api/auth/refresh", json=body)).status_code == 200
        reused = await client.post("/api/auth/refresh", json=body)
        assert code(reused) == "REFRESH_TOKEN_REUSED"


async def test_logout_revokes_the_family(factory: Factory) -> None:
    user = await factory.user()
    out = await factory.client.post("/api/auth/logout", json={"refresh_token": user.refresh_token})
    assert out.status_code == 204
    after = await factory.client.post(
        "/api/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    assert after.status_code == 401
    assert code(after) == "REFRESH_TOKEN_INVALID"


async def test_logout_all_revokes_earlier_access_tokens_but_not_later_ones(
    factory: Factory,
) -> None:
    user = await factory.user()
    response = await factory.client.post("/api/auth/logout-all", headers=user.headers)
    assert response.status_code == 204
    me = await factory.client.get("/api/users/me", headers=user.headers)
    assert me.status_code == 401
    assert code(me) == "TOKEN_REVOKED"
    refresh = await factory.client.post(
        "/api/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    assert refresh.status_code == 401
    fresh = await factory.login(user.email)
    assert (await factory.client.get("/api/users/me", headers=_bearer(fresh))).status_code == 200


async def test_password_change_revokes_sessions(factory: Factory) -> None:
    user = await factory.user()
    response = await factory.client.post(
        "/api/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "another-password-1"},
        headers=user.headers,
    )
    assert response.status_code == 204
    assert code(await factory.client.get("/api/users/me", headers=user.headers)) == "TOKEN_REVOKED"
    assert (
        await factory.client.post(
            "/api/auth/login", json={"email": user.email, "password": "another-password-1"}
        )
    ).status_code == 200


async def test_tokens_are_not_interchangeable(factory: Factory) -> None:
    user = await factory.user()
    as_access = await factory.client.get(
        "/api/users/me", headers={"Authorization": f"Bearer {user.refresh_token}"}
    )
    assert as_access.status_code == 401 and code(as_access) == "TOKEN_INVALID"
    as_refresh = await factory.client.post(
        "/api/auth/refresh", json={"refresh_token": user.access_token}
    )
    assert as_refresh.status_code == 401 and code(as_refresh) == "REFRESH_TOKEN_INVALID"


async def test_missing_token_is_token_missing(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/users/me")
    assert response.status_code == 401
    assert code(response) == "TOKEN_MISSING"
    assert response.headers["www-authenticate"] == "Bearer"


def _bearer(pair: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def _client_from(app: object, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://huddle.test")


async def test_failed_logins_lock_the_guesser_out_but_not_the_owner(settings: Settings) -> None:
    """SPEC §5: LOGIN_RATE per (IP, account) and per IP; the owner elsewhere keeps signing in."""
    limited = settings.model_copy(update={"login_rate": 3, "login_account_rate": 5})
    app = create_api(limited)
    async with (
        LifespanManager(app),
        _client_from(app, "198.51.100.1") as stranger,
        _client_from(app, "198.51.100.2") as owner_client,
    ):
        user = await Factory(owner_client, app.state.runtime).user()
        wrong = {"email": user.email, "password": "not-the-password"}
        for _ in range(3):
            assert (await stranger.post("/api/auth/login", json=wrong)).status_code == 401
        refused = await stranger.post("/api/auth/login", json=wrong)
        assert refused.status_code == 429
        assert code(refused) == "RATE_LIMITED"
        assert int(refused.headers["retry-after"]) >= 1
        # Locked even with the right password, so a guesser learns nothing more...
        right = {"email": user.email, "password": PASSWORD}
        assert (await stranger.post("/api/auth/login", json=right)).status_code == 429
        # ...and for any other account from that address (the per-IP bucket).
        other = await Factory(owner_client, app.state.runtime).user()
        other_right = {"email": other.email, "password": PASSWORD}
        assert (await stranger.post("/api/auth/login", json=other_right)).status_code == 429
        # The owner, from their own address, is not locked out.
        assert (await owner_client.post("/api/auth/login", json=right)).status_code == 200


async def test_many_addresses_guessing_one_account_lock_it_everywhere(settings: Settings) -> None:
    limited = settings.model_copy(update={"login_rate": 3, "login_account_rate": 5})
    app = create_api(limited)
    async with LifespanManager(app), _client_from(app, "198.51.100.9") as owner_client:
        user = await Factory(owner_client, app.state.runtime).user()
        wrong = {"email": user.email, "password": "not-the-password"}
        for n in range(5):  # 5 addresses, one guess each: the account's 5 are spent
            async with _client_from(app, f"203.0.113.{n + 1}") as guesser:
                assert (await guesser.post("/api/auth/login", json=wrong)).status_code == 401
        right = {"email": user.email, "password": PASSWORD}
        locked = await owner_client.post("/api/auth/login", json=right)
        assert locked.status_code == 429 and code(locked) == "RATE_LIMITED"


async def test_wrong_current_passwords_count_as_failed_logins(settings: Settings) -> None:
    """POST /api/auth/password had no limit: a stolen access token could guess the password."""
    limited = settings.model_copy(update={"login_rate": 3})
    app = create_api(limited)
    async with LifespanManager(app), _client_from(app, "198.51.100.3") as client:
        user = await Factory(client, app.state.runtime).user()
        wrong = {"currentPassword": "not-the-password", "newPassword": "another-password-1"}
        for _ in range(3):
            response = await client.post("/api/auth/password", json=wrong, headers=user.headers)
            assert response.status_code == 401 and code(response) == "INVALID_CREDENTIALS"
        right = {"currentPassword": PASSWORD, "newPassword": "another-password-1"}
        refused = await client.post("/api/auth/password", json=right, headers=user.headers)
        assert refused.status_code == 429 and code(refused) == "RATE_LIMITED"
        # They are the same buckets as the login's: logging in from there is locked too.
        login = {"email": user.email, "password": PASSWORD}
        assert (await client.post("/api/auth/login", json=login)).status_code == 429
        # Nothing changed: the old password still works from elsewhere.
        async with _client_from(app, "198.51.100.4") as elsewhere:
            assert (await elsewhere.post("/api/auth/login", json=login)).status_code == 200
