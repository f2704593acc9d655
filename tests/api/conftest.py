"""An app per test on SQLite or PostgreSQL, driven through ASGI or over a real socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from huddle.api.app import create_api
from huddle.config import Settings
from huddle.db.migrate import upgrade
from huddle.runtime import Runtime
from tests.factories import Factory

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
_migrated: set[str] = set()


def make_settings(tmp: Path, database_url: str | None = None, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "huddle_data_dir": tmp,
        "jwt_secret": TEST_SECRET,
        "database_url": database_url,
        "cors_origin": ["http://localhost:3000"],
        **extra,
    }
    return Settings(**values)


def migrated(settings: Settings) -> Settings:
    url = settings.effective_database_url
    if url not in _migrated:
        upgrade(settings)
        _migrated.add(url)
    return settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """Each API test runs on SQLite (a file per test) and PostgreSQL (a database per session)."""
    if request.param == "sqlite":
        return None
    base: str = request.getfixturevalue("postgres_server_url")
    return base.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
def settings(tmp_path: Path, db_url: str | None) -> Settings:
    return migrated(make_settings(tmp_path, db_url))


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_api(settings)
    async with LifespanManager(application, startup_timeout=30):
        yield application


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    rt: Runtime = app.state.runtime
    return rt


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://huddle.test") as c:
        yield c


@pytest.fixture
def factory(client: httpx.AsyncClient, runtime: Runtime) -> Factory:
    return Factory(client, runtime)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """A real uvicorn server on a real port, in this process's event loop."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
            ws="websockets-sansio",
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self._task = asyncio.create_task(self.server.serve())
        for _ in range(300):
            if self.server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        raise RuntimeError("server did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
