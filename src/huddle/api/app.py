"""The REST API as a FastAPI app; its lifespan owns the Runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from huddle import ops
from huddle.api import errors
from huddle.api.apidocs import mount_docs
from huddle.api.middleware import BodyLimit, RequestContext
from huddle.api.openapi import finish_schema
from huddle.api.routes import auth, events, internal, tasks, teams, users
from huddle.config import Settings
from huddle.runtime import Runtime

Hook = Callable[[Runtime], Awaitable[None]]


def create_api(
    settings: Settings,
    *,
    on_start: list[Hook] | None = None,
    on_stop: list[Hook] | None = None,
) -> FastAPI:
    """The FastAPI app. `on_start`/`on_stop` let the gateway share the Runtime."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings)
        app.state.runtime = runtime
        app.state.readiness = runtime.readiness()
        try:
            for hook in on_start or []:
                await hook(runtime)
            yield
        finally:
            for hook in reversed(on_stop or []):
                await hook(runtime)
            await runtime.stop()

    app = FastAPI(
        title="Huddle",
        version="0.1.0",
        summary="Team collaboration backend: users, teams, tasks, live events.",
        description=(
            'Every error answers `{"error": {code, message, details?}}` (the `Error` '
            "schema) with the statuses each operation lists. Log in with "
            "`POST /api/auth/login` (or **Authorize** here) and send the access token as "
            "`Authorization: Bearer <token>`. Lists are pages: pass `nextCursor` back "
            "as `?cursor=` until it is null. Ids, versions and flags are JSON integer "
            'and boolean literals: `1`, not `"1"`, `1.0` or `true`.'
        ),
        lifespan=lifespan,
        docs_url=None,  # mount_docs: Swagger UI from Huddle's own assets, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.openapi = lambda: finish_schema(app)  # type: ignore[method-assign]
    errors.install(app)
    for router in (
        auth.router,
        users.router,
        teams.router,
        tasks.router,
        events.router,
        ops.router,
    ):
        app.include_router(router)
    # The gateways' internal routes, only where there is a credential to admit them by.
    app.state.service_credential = settings.service_credential()
    if app.state.service_credential is not None:
        app.include_router(internal.router)
    mount_docs(app)
    if settings.bench_endpoints:
        from huddle.api.routes import bench

        app.include_router(bench.router)
    # Inside CORS, so that a browser can read the 413.
    app.add_middleware(BodyLimit, max_body=settings.max_body)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origin,
        allow_credentials="*" not in settings.cors_origin,
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "If-Match", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
    )
    app.add_middleware(RequestContext, trusted=settings.trusted_networks)
    return app
