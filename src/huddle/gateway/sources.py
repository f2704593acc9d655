"""The two user-data sources of the gateway, and `create_source`, which picks one.

- `InProcessSource(runtime)` — `huddle serve`: the services, in this process.
- `HttpSource(settings)` (in `backend.py`) — `huddle gateway`, or any process with BACKEND_URL:
  the REST API, called with the user's own access token.

Both follow `huddle.gateway.userdata.UserDataSource`. What the gateway calls:

    source = create_source(settings, runtime)        # runtime None under `huddle gateway`
    await source.start()                             # in the lifespan; `stop()` at shutdown
    data = await source.fetch(user_id, token)        # UserData(user, teams, tasks, degraded)
    tokens = await source.rotate(refresh_token)      # RefreshedTokens
    replay = await source.replay(user_id, token, after)  # Replay(events, resync_required,
                                                         #        last_event_id, more)
    source.invalidate(user_id)                       # an event changed the user's teams/tasks
    source.on_recovered(refresh_degraded_sockets)    # async () -> None, after an outage

Contract:
- `fetch` never raises for a backend failure (timeout, 5xx, connection
  refused, open breaker, database down): it answers within BACKEND_TIMEOUT
  with the cached data (HTTP only; cached less than 60 s ago and not
  invalidated since) or else `{id}` and empty lists, and `degraded=True`.
  It raises the matching AuthError when the backend rejects the token
  (TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_REVOKED): that is an answer, not a
  failure. The cache is a fallback only: a working backend is always asked,
  so it re-checks the token (revocation) on every fetch.
- `rotate` raises REFRESH_TOKEN_EXPIRED/INVALID/REUSED as the API answers, and
  BackendUnavailable when the backend (or database) cannot answer.
- `replay` returns at most `MAX_PAGE` (1,000) events; `more` says to call again
  with `after=last_event_id`. It raises BackendUnavailable when the backend
  cannot answer, AuthError when it rejects the token, BadRequest for a
  negative `after`. Visibility and edge cases: `huddle.services.events`.
- `on_recovered(callback)`: after a failed call, a background probe (started
  by `start()`) watches the backend; the first success after the failure runs
  each callback once, as a task. The gateway keeps the sockets it sent
  `degraded: true`, and in the callback calls `fetch` again for each and
  emits `data_refreshed {teams, tasks}` for those that come back not degraded.

Limits, the same on both paths: all of a user's teams up to `MAX_TEAMS` (1,000)
and the first `MAX_TASKS` (500) tasks assigned to them, by id.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlalchemy import text

from huddle.config import Settings
from huddle.errors import BackendUnavailable, ConfigError, DatabaseUnavailable, TokenInvalid
from huddle.gateway.backend import MAX_TASKS, MAX_TEAMS, HttpSource, fallback
from huddle.gateway.recovery import RecoveredCallback, RecoveryWatch
from huddle.gateway.userdata import RefreshedTokens, Replay, UserData, UserDataSource
from huddle.schemas import UserOut, wire
from huddle.services.events import EventService

if TYPE_CHECKING:
    from huddle.runtime import Runtime

__all__ = ["HttpSource", "InProcessSource", "create_source"]


def create_source(settings: Settings, runtime: Runtime | None) -> UserDataSource:
    """HttpSource when BACKEND_URL is set, else InProcessSource over `runtime`."""
    if settings.backend_url:
        return HttpSource(settings)
    if runtime is None:
        raise ConfigError("BACKEND_URL: required for huddle gateway")
    return InProcessSource(runtime)


class InProcessSource:
    """User data straight from the services: no network hop, no cache."""

    def __init__(self, runtime: Runtime, *, probe_interval: float = 2.0) -> None:
        self._runtime = runtime
        self._timeout = runtime.settings.backend_timeout
        self._events = EventService(runtime.db)
        self._watch = RecoveryWatch(self._probe, interval=probe_interval)

    @property
    def healthy(self) -> bool:
        return self._watch.healthy

    async def fetch(self, user_id: int, token: str) -> UserData:
        try:
            async with asyncio.timeout(self._timeout):
                user = await self._runtime.auth.authenticate(token)
                if user.id != user_id:
                    raise TokenInvalid()
                teams, _ = await self._runtime.teams.teams_of(user_id, limit=MAX_TEAMS)
                tasks, _ = await self._runtime.tasks.assigned_to(user_id, limit=MAX_TASKS)
        except DatabaseUnavailable:
            self._watch.failed("fetch", "database")
            return fallback(user_id)
        except TimeoutError:
            self._watch.failed("fetch", "timeout")
            return fallback(user_id)
        self._watch.succeeded()
        user_wire = wire(UserOut.model_validate(user))
        return UserData(user_wire, [wire(team) for team in teams], [wire(task) for task in tasks])

    async def rotate(self, refresh_token: str) -> RefreshedTokens:
        # No timeout here: cancelling a redemption half way could spend the
        # refresh token without handing out its successor.
        try:
            session = await self._runtime.auth.refresh(refresh_token)
        except DatabaseUnavailable:
            self._watch.failed("rotate", "database")
            raise BackendUnavailable() from None
        self._watch.succeeded()
        return RefreshedTokens(session.access_token, session.refresh_token, session.expires_in)

    async def replay(self, user_id: int, token: str, after: int) -> Replay:
        try:
            page = await self._events.visible_after(user_id, after)
        except DatabaseUnavailable:
            self._watch.failed("replay", "database")
            raise BackendUnavailable() from None
        self._watch.succeeded()
        return Replay(page.events, page.resync_required, page.last_event_id, page.more)

    def invalidate(self, user_id: int) -> None:
        return None  # nothing cached: every fetch reads the database

    def on_recovered(self, callback: RecoveredCallback) -> None:
        self._watch.on_recovered(callback)

    async def start(self) -> None:
        await self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

    async def _probe(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._runtime.db.read() as session:
                    await session.execute(text("SELECT 1"))
        except (DatabaseUnavailable, TimeoutError):
            self._watch.failed("probe", "database")
            raise
        self._watch.succeeded()
