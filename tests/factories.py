"""Factories for users, teams and tasks, through the real REST API."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from huddle.runtime import Runtime

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)


@dataclass
class TestUser:
    __test__ = False  # not a pytest class

    id: int
    email: str
    password: str
    access_token: str
    refresh_token: str
    is_admin: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Factory:
    """Makes users, teams, members and tasks with unique names, asserting each step worked."""

    def __init__(self, client: httpx.AsyncClient, runtime: Runtime | None = None) -> None:
        self.client = client
        self.runtime = runtime

    def email(self) -> str:
        return f"user{next(_seq)}-{secrets.token_hex(3)}@example.com"

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post(
            "/api/auth/login", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def user(self, *, admin: bool = False, name: str = "Test User") -> TestUser:
        email = self.email()
        if admin:
            if self.runtime is None:
                raise RuntimeError("admin users need the runtime")
            created = await self.runtime.auth.register(email, PASSWORD, name, is_admin=True)
            user_id = created.id
        else:
            response = await self.client.post(
                "/api/auth/register", json={"email": email, "password": PASSWORD, "name": name}
            )
            assert response.status_code == 201, response.text
            user_id = response.json()["id"]
        tokens = await self.login(email)
        return TestUser(
            user_id, email, PASSWORD, tokens["access_token"], tokens["refresh_token"], admin
        )

    async def team(self, owner: TestUser, name: str | None = None) -> dict[str, Any]:
        response = await self.client.post(
            "/api/teams", json={"name": name or f"Team {next(_seq)}"}, headers=owner.headers
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    async def member(
        self, team_id: int, by: TestUser, user: TestUser, role: str = "member"
    ) -> dict[str, Any]:
        response = await self.client.post(
            f"/api/teams/{team_id}/members",
            json={"email": user.email, "role": role},
            headers=by.headers,
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    async def task(self, team_id: int, by: TestUser, **fields: Any) -> dict[str, Any]:
        body = {"title": f"Task {next(_seq)}", **fields}
        response = await self.client.post(
            f"/api/teams/{team_id}/tasks", json=body, headers=by.headers
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data
