"""The composition root: `build_app(settings, role)`, the ASGI application each command serves.

Everything is wired here and nowhere else:

- `api` (`huddle api`): the REST API (`huddle.api`), whose lifespan builds the
  `Runtime` (database, bus, services, limiters), and the operations routes.
- `gateway` (`huddle gateway`): the Socket.IO gateway and the operations
  routes. No database: the bus (Redis when REDIS_URL is set), a verify-only
  token service, the HTTP user-data source (BACKEND_URL) and the rate-limit
  store are built in its own lifespan. This process imports no SQLAlchemy,
  no password hashing and nothing of `huddle.api` (a test holds it to that).
- `serve` (`huddle serve`): both in one process, sharing the Runtime's bus,
  token service and rate-limit store, with the in-process user-data source,
  and the web client at `/`.

The gateway starts from the newest event id its bus knows (the log's head
under `huddle serve`, the Redis stream's under `huddle gateway`), never from
a database of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

from fastapi import FastAPI
from starlette.types import ASGIApp

from huddle import ops
from huddle.config import Settings
from huddle.errors import ConfigError

if TYPE_CHECKING:
    from huddle.runtime import Runtime

Role = Literal["serve", "api", "gateway"]


def build_app(settings: Settings, role: Role = "serve") -> ASGIApp:
    """The ASGI app of one command (see the module docstring)."""
    if role == "api":
        from huddle.api.app import create_api

        return create_api(settings)
    if role == "serve":
        return _serve(settings)
    if role == "gateway":
        return _gateway(settings)
    raise ValueError(f"unknown role {role!r}")


def _serve(settings: Settings) -> ASGIApp:
    from huddle.api.app import create_api
    from huddle.gateway.server import Gateway
    from huddle.gateway.sources.inprocess import InProcessSource
    from huddle.web import mount_web_client

    gateway = Gateway(settings)

    async def start(runtime: Runtime) -> None:
        await gateway.start(
            revocations=runtime.revocations,  # one registry with the REST side
            bus=runtime.bus,
            tokens=runtime.tokens,
            source=InProcessSource(runtime),
            buckets=runtime.buckets,
        )

    async def stop(runtime: Runtime) -> None:
        await gateway.stop()

    app = create_api(settings, on_start=[start], on_stop=[stop])
    mount_web_client(app)  # SPEC §7: the web client is served by `huddle serve` only
    return gateway.asgi(app)


def _gateway(settings: Settings) -> ASGIApp:
    import httpx

    from huddle.events.bus import EventBus, InProcessBus, RedisBus
    from huddle.gateway.server import Gateway
    from huddle.gateway.sources.http import HttpSource
    from huddle.security.ratelimit import create_bucket_store
    from huddle.security.tokens import TokenService

    backend_url = settings.backend_url
    if not backend_url:
        raise ConfigError("BACKEND_URL: required for huddle gateway")
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus: EventBus
        if settings.redis_url:
            bus = RedisBus(settings.redis_url, prefix=settings.redis_prefix)
        else:
            bus = InProcessBus()
        buckets = create_bucket_store(settings)
        probe = httpx.AsyncClient(timeout=settings.backend_timeout)

        async def backend_ok() -> bool:
            response = await probe.get(backend_url.rstrip("/") + "/healthz")
            return response.status_code == 200

        async def redis_ok() -> bool:
            return bus.healthy

        app.state.readiness = {"backend": backend_ok}
        if settings.redis_url:
            app.state.readiness["redis"] = redis_ok
        await bus.start()
        try:
            await gateway.start(
                bus=bus,
                tokens=TokenService(settings, can_sign=False),
                source=HttpSource(settings),
                buckets=buckets,
            )
            yield
        finally:
            await gateway.stop()
            await bus.stop()
            await buckets.aclose()
            await probe.aclose()

    app = FastAPI(title="Huddle gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.include_router(ops.router)
    return gateway.asgi(app)
