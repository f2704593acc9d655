"""SPEC §3: no input — however deep, long, out of range or odd its characters — gets a 5xx.

Each case here answered 500 with a traceback in the log before it was fixed
(issue 10 §3), on SQLite, PostgreSQL or both; every test runs on both.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest

from tests.api.conftest import TEST_SECRET
from tests.factories import PASSWORD, Factory, TestUser

DEEP = b"[" * 100_000 + b"]" * 100_000
MAX_ID = 2**31 - 1


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def assert_refused(response: httpx.Response, status: int = 422, code: str = "VALIDATION_ERROR"):  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert "Traceback" not in response.text


async def _json_routes(factory: Factory) -> tuple[TestUser, list[tuple[str, str]]]:
    """The routes that read a JSON body, with ids that exist."""
    owner = await factory.user()
    team = await factory.team(owner)
    task = await factory.task(team["id"], owner)
    return owner, [
        ("POST", "/api/auth/register"),
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/refresh"),
        ("POST", "/api/auth/logout"),
        ("POST", "/api/auth/password"),
        ("POST", "/api/teams"),
        ("PATCH", f"/api/teams/{team['id']}"),
        ("POST", f"/api/teams/{team['id']}/members"),
        ("PATCH", f"/api/teams/{team['id']}/members/{owner.id}"),
        ("POST", f"/api/teams/{team['id']}/tasks"),
        ("PATCH", f"/api/tasks/{task['id']}"),
    ]


async def test_deeply_nested_json_is_a_validation_error_on_every_body_route(
    factory: Factory,
) -> None:
    owner, routes = await _json_routes(factory)
    headers = {**owner.headers, "content-type": "application/json"}
    for method, path in routes:
        response = await factory.client.request(method, path, content=DEEP, headers=headers)
        assert_refused(response)
    # The server is fine afterwards.
    assert (await factory.client.get("/api/users/me", headers=owner.headers)).status_code == 200


def _cursor(value: int | str) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        str(2**63),  # beyond int64 (SQLite)
        str(2**80),
        "9" * 40,
        _cursor(2**63),  # the old encoding of a huge id
        _cursor(2**31),
        "-1",
        "+5",
        " 5",
        "1_0",
        "abc",
    ],
)
async def test_cursors_out_of_range_or_not_ours_never_500(factory: Factory, cursor: str) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    for path in (
        "/api/teams",
        f"/api/teams/{team['id']}/members",
        f"/api/teams/{team['id']}/tasks",
        f"/api/users/{owner.id}/teams",
        f"/api/users/{owner.id}/tasks",
    ):
        response = await factory.client.get(path, params={"cursor": cursor}, headers=owner.headers)
        assert_refused(response)


async def test_cursors_past_the_last_possible_id_give_an_empty_page(factory: Factory) -> None:
    """Every cursor the schema allows is accepted (int32 on PostgreSQL is never exceeded)."""
    owner = await factory.user()
    team = await factory.team(owner)
    await factory.task(team["id"], owner, assigneeId=owner.id)
    for cursor in (str(MAX_ID), str(MAX_ID + 1), "9999999999"):
        for path in (
            "/api/teams",
            f"/api/teams/{team['id']}/members",
            f"/api/teams/{team['id']}/tasks",
            f"/api/users/{owner.id}/teams",
            f"/api/users/{owner.id}/tasks",
        ):
            response = await factory.client.get(
                path, params={"cursor": cursor}, headers=owner.headers
            )
            assert response.status_code == 200, (path, cursor, response.text)
            assert response.json() == {"items": [], "nextCursor": None}


@pytest.mark.parametrize(
    "due",
    [
        "9999-12-31T23:59:59-14:00",  # past year 9999 once in UTC
        "0001-01-01T00:00:00+14:00",  # before year 1 once in UTC
    ],
)
async def test_due_dates_out_of_range_after_the_offset_are_refused(
    factory: Factory, due: str
) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    created = await factory.client.post(
        f"/api/teams/{team['id']}/tasks",
        json={"title": "t", "dueDate": due},
        headers=owner.headers,
    )
    assert_refused(created)
    task = await factory.task(team["id"], owner)
    patched = await factory.client.patch(
        f"/api/tasks/{task['id']}", json={"dueDate": due}, headers=owner.headers
    )
    assert_refused(patched)


async def test_due_dates_are_kept_in_utc(factory: Factory) -> None:
    owner = await factory.user()
    team = await factory.team(owner)
    task = await factory.task(team["id"], owner, dueDate="9999-12-31T10:00:00-10:00")
    assert task["dueDate"] == "9999-12-31T20:00:00.000Z"
    naive = await factory.task(team["id"], owner, dueDate="2030-01-02T03:04:05")
    assert naive["dueDate"] == "2030-01-02T03:04:05.000Z"


ODD = ["nul\x00byte", "lone \ud800 surrogate"]


@pytest.mark.parametrize("odd", ODD)
async def test_strings_postgresql_cannot_store_are_validation_errors(
    factory: Factory, odd: str
) -> None:
    client = factory.client

    async def send(method: str, path: str, body: object, user: TestUser | None = None) -> None:
        # ensure_ascii: the JSON spells the character as an escape, as a hostile client would.
        headers = {"content-type": "application/json", **(user.headers if user else {})}
        content = json.dumps(body, ensure_ascii=True).encode()
        response = await client.request(method, path, content=content, headers=headers)
        assert_refused(response)

    await send(
        "POST", "/api/auth/register", {"email": factory.email(), "password": PASSWORD, "name": odd}
    )
    await send(
        "POST",
        "/api/auth/register",
        {"email": f"a{odd}@example.com", "password": PASSWORD, "name": "n"},
    )
    await send(
        "POST",
        "/api/auth/register",
        {"email": factory.email(), "password": f"longenough{odd}", "name": "n"},
    )
    await send("POST", "/api/auth/login", {"email": f"x{odd}@e.com", "password": "p"})
    await send("POST", "/api/auth/refresh", {"refresh_token": f"x{odd}"})
    await send("POST", "/api/auth/logout", {"refresh_token": f"x{odd}"})
    if "\x00" in odd:
        form = await client.post(
            "/api/auth/login", data={"username": f"x{odd}@e.com", "password": "p"}
        )
        assert_refused(form)
    owner = await factory.user()
    await send("POST", "/api/teams", {"name": odd}, owner)
    await send("POST", "/api/teams", {"name": "n", "description": odd}, owner)
    team = await factory.team(owner)
    await send("PATCH", f"/api/teams/{team['id']}", {"name": odd}, owner)
    await send("PATCH", f"/api/teams/{team['id']}", {"description": odd}, owner)
    await send("POST", f"/api/teams/{team['id']}/members", {"email": f"m{odd}@e.com"}, owner)
    tasks = f"/api/teams/{team['id']}/tasks"
    await send("POST", tasks, {"title": odd}, owner)
    await send("POST", tasks, {"title": "t", "description": odd}, owner)
    task = await factory.task(team["id"], owner)
    await send("PATCH", f"/api/tasks/{task['id']}", {"title": odd}, owner)
    await send("PATCH", f"/api/tasks/{task['id']}", {"description": odd}, owner)
    await send(
        "POST",
        "/api/auth/password",
        {"currentPassword": PASSWORD, "newPassword": f"longenough{odd}"},
        owner,
    )
    await send(
        "POST", "/api/auth/password", {"currentPassword": odd, "newPassword": "longenough"}, owner
    )
    # Nothing was stored: the team list and the task list are as the factory left them.
    teams = await client.get("/api/teams", headers=owner.headers)
    assert [t["id"] for t in teams.json()["items"]] == [team["id"]]
    listing = await client.get(tasks, headers=owner.headers)
    assert [t["id"] for t in listing.json()["items"]] == [task["id"]]


@pytest.mark.parametrize("sub", ["9" * 40, str(2**31), str(2**63), "0", "-1"])
async def test_a_signed_token_whose_sub_is_out_of_range_is_token_invalid(
    client: httpx.AsyncClient, sub: str
) -> None:
    now = int(time.time())
    token = jwt.encode(
        {"sub": sub, "type": "access", "iat": now, "exp": now + 600, "jti": "x"},
        TEST_SECRET,
        algorithm="HS256",
    )
    response = await client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert_refused(response, 401, "TOKEN_INVALID")
