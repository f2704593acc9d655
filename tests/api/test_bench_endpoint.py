"""POST /bench/broadcast: off by default, refused in production, loopback only, real outbox path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from huddle.api.app import create_api
from huddle.config import Settings, load_settings
from huddle.errors import ConfigError
from huddle.events import outbox
from huddle.events.envelope import Envelope
from huddle.runtime import Runtime
from tests.api.conftest import make_settings, migrated


@pytest.fixture
async def bench_app(tmp_path: Path, db_url: str | None) -> AsyncIterator[FastAPI]:
    settings = migrated(make_settings(tmp_path, db_url, bench_endpoints=True))
    application = create_api(settings)
    async with LifespanManager(application, startup_timeout=30):
        yield application


def _client(app: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 51000))
    return httpx.AsyncClient(transport=transport, base_url="http://huddle.test")


async def test_the_trigger_does_not_exist_unless_enabled(client: httpx.AsyncClient) -> None:
    response = await client.post("/bench/broadcast?room=team:1&count=1")
    assert response.status_code == 404


def test_production_refuses_bench_endpoints(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BENCH_ENDPOINTS"):
        load_settings(
            app_env="production",
            jwt_secret="a-production-secret-that-is-long-enough-0123456789",
            huddle_data_dir=tmp_path,
            bench_endpoints=True,
        )


async def test_only_loopback_clients_may_trigger(bench_app: FastAPI) -> None:
    async with _client(bench_app, "203.0.113.7") as remote:
        response = await remote.post("/bench/broadcast?room=team:1&count=1")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"


async def test_broadcast_publishes_logged_task_events_in_order(bench_app: FastAPI) -> None:
    runtime: Runtime = bench_app.state.runtime
    heard: list[Envelope] = []

    async def listen(event: Envelope) -> None:
        heard.append(event)

    runtime.bus.subscribe(listen)
    # A team id no other test's team gets: on PostgreSQL the tests of a worker share one
    # database, and these events would show up in the event log of a real team 7.
    team = 2_000_000_007
    async with _client(bench_app, "127.0.0.1") as local:
        response = await local.post(f"/bench/broadcast?room=team:{team}&count=3&size=600")
        assert response.status_code == 200, response.text
        body = response.json()
        again = (await local.post(f"/bench/broadcast?room=team:{team}&count=2")).json()

    assert body["count"] == 3
    assert body["lastEventId"] - body["firstEventId"] == 2
    assert again["firstEventId"] == body["lastEventId"] + 1
    assert 580 <= body["frameBytes"] <= 620
    assert [e.id for e in heard] == list(range(body["firstEventId"], again["lastEventId"] + 1))
    first = heard[0]
    assert first.type == "task_updated"
    assert first.team_id == team
    payload = first.payload
    assert payload["eventId"] == first.id
    assert isinstance(payload["sentAt"], int)
    assert payload["task"]["teamId"] == team
    assert payload["changes"] == ["status"]
    # Written to the event log like any other change, so replay sees them too.
    async with runtime.db.read() as session:
        logged = await outbox.events_between(
            session, body["firstEventId"] - 1, again["lastEventId"] + 1
        )
    assert [e.id for e in logged] == [e.id for e in heard]


@pytest.mark.parametrize(
    "query",
    ["room=team:0", "room=lobby", "count=0", "count=10001", "size=70000", "event=task_deleted"],
)
async def test_bad_parameters_are_refused(bench_app: FastAPI, query: str) -> None:
    async with _client(bench_app, "127.0.0.1") as local:
        response = await local.post(f"/bench/broadcast?{query}")
    assert response.status_code in (400, 422)


def test_settings_default_is_off(tmp_path: Path) -> None:
    assert Settings(huddle_data_dir=tmp_path, _env_file=None).bench_endpoints is False  # type: ignore[call-arg]
