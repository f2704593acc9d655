"""Health, readiness, metrics, error bodies, and logs that never hold a credential."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from asgi_lifespan import LifespanManager
from fastapi import APIRouter

from huddle.api.app import create_api
from huddle.config import Settings
from huddle.logging import configure_logging
from tests.api.conftest import LiveServer
from tests.factories import PASSWORD, Factory


async def test_healthz_readyz_and_metrics(client: httpx.AsyncClient, factory: Factory) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    user = await factory.user()
    await client.get(f"/api/users/{user.id}/teams", headers=user.headers)
    text = (await client.get("/metrics")).text
    assert (
        'huddle_http_requests_total{method="GET",route="/api/users/{userId}/teams",status="200"}'
        in text
    )
    assert "huddle_http_request_duration_seconds_bucket" in text


async def test_database_down_is_503_and_readyz_names_it(tmp_path: Path) -> None:
    settings = Settings(
        app_env="test",
        huddle_data_dir=tmp_path,
        jwt_secret="x" * 40,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none",
    )
    app = create_api(settings)
    async with LifespanManager(app, startup_timeout=30):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["details"]["down"] == ["database"]
            response = await client.post(
                "/api/auth/register",
                json={"email": "a@example.com", "password": PASSWORD, "name": "A"},
            )
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
            assert "asyncpg" not in response.text and "127.0.0.1" not in response.text


async def test_unexpected_errors_are_500_without_internals(settings: Settings) -> None:
    app = create_api(settings)
    boom = APIRouter()

    @boom.get("/boom")
    async def explode() -> None:
        raise RuntimeError("secret internals")

    app.include_router(boom)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "INTERNAL_ERROR", "message": "Internal server error."}
    }
    assert response.headers["x-request-id"] == "req-123"


@pytest.fixture
def captured_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    yield capsys
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


async def test_logs_carry_request_ids_and_never_credentials(
    factory: Factory, captured_logs: pytest.CaptureFixture[str]
) -> None:
    configure_logging("debug", "json")  # here: capsys holds sys.stderr only during the test
    user = await factory.user()
    refreshed = await factory.client.post(
        "/api/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    await factory.client.post(
        "/api/auth/login", json={"email": user.email, "password": "wrong-password"}
    )
    await factory.client.post(
        "/api/auth/register", json={"email": "x@example.com", "password": "short", "name": "X"}
    )
    out = captured_logs.readouterr()
    text = out.out + out.err
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "http_request"]
    assert len(requests) >= 5
    assert all(line.get("request_id") for line in requests)
    for secret in (
        PASSWORD,
        "wrong-password",
        user.access_token,
        user.refresh_token,
        refreshed.json()["access_token"],
        refreshed.json()["refresh_token"],
        "x" * 40,
    ):
        assert secret not in text


async def test_api_over_a_real_socket(settings: Settings) -> None:
    async with (
        LiveServer(create_api(settings)) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        factory = Factory(client)
        owner = await factory.user()
        team = await factory.team(owner)
        task = await factory.task(team["id"], owner, assigneeId=owner.id)
        teams = await client.get(f"/api/users/{owner.id}/teams", headers=owner.headers)
        assert teams.json()["items"][0]["id"] == team["id"]
        tasks = await client.get(f"/api/users/{owner.id}/tasks", headers=owner.headers)
        assert [t["id"] for t in tasks.json()["items"]] == [task["id"]]
        preflight = await client.options(
            "/api/teams",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        evil = await client.options(
            "/api/teams",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in evil.headers
