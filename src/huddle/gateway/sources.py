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
  with the cached data (HTTP: cached less than 60 s ago and not invalidated
  since) or else `{id}` and empty lists, and `degraded=True`.
  It raises the matching AuthError when the backend rejects the token
  (TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_REVOKED): that is an answer, not a
  failure. Over HTTP the cache is a fallback only: a working backend is
  always asked, so it re-checks the token (revocation) on every fetch. In
  process the cache is warm (see `InProcessSource`): the token is checked
  locally on every fetch, and the bus keeps the cached teams and tasks exact.
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
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from huddle.config import Settings
from huddle.errors import BackendUnavailable, ConfigError, DatabaseUnavailable, TokenInvalid
from huddle.events.envelope import SESSIONS_REVOKED, Envelope
from huddle.gateway.backend import MAX_TASKS, MAX_TEAMS, HttpSource, fallback
from huddle.gateway.recovery import RecoveredCallback, RecoveryWatch
from huddle.gateway.userdata import RefreshedTokens, Replay, UserData, UserDataSource
from huddle.schemas import UserOut, wire
from huddle.services.events import EventService

if TYPE_CHECKING:
    from huddle.runtime import Runtime

__all__ = ["HttpSource", "InProcessSource", "create_source"]

USER_WIRE_CACHE_SIZE = 10_000
"""User rows whose wire form is kept (the size of `AuthService`'s row cache)."""


def create_source(settings: Settings, runtime: Runtime | None) -> UserDataSource:
    """HttpSource when BACKEND_URL is set, else InProcessSource over `runtime`."""
    if settings.backend_url:
        return HttpSource(settings)
    if runtime is None:
        raise ConfigError("BACKEND_URL: required for huddle gateway")
    return InProcessSource(runtime)


class InProcessSource:
    """User data straight from the services, with a warm per-user cache.

    Under `huddle serve` every committed change passes through this process's
    bus in order, so the cache can be exact: an event for a team drops every
    cached user of that team (a task there may be, or may have been, assigned
    to any of them), and an event about a user drops that user. A cached entry
    still has its token checked on every fetch (`AuthService.authenticate`).
    """

    def __init__(
        self, runtime: Runtime, *, probe_interval: float = 2.0, cache_ttl: float = 60.0
    ) -> None:
        self._runtime = runtime
        self._timeout = runtime.settings.backend_timeout
        self._events = EventService(runtime.db)
        self._watch = RecoveryWatch(self._probe, interval=probe_interval)
        self._ttl = cache_ttl
        self._cache: dict[int, tuple[float, list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self._members: dict[int, set[int]] = {}  # team id -> cached users in it
        self._user_wires: dict[int, tuple[Any, dict[str, Any]]] = {}  # id -> (row, wire)
        self._generation = 0  # bumped by every invalidation; a fetch older than it stores nothing
        self._subscribed = False

    @property
    def healthy(self) -> bool:
        return self._watch.healthy

    async def fetch(self, user_id: int, token: str) -> UserData:
        # The warm path — user row and teams and tasks all cached — does no I/O,
        # so it needs no timeout (arming one costs more than the rest of it).
        user = self._runtime.auth.authenticate_cached(token)
        if user is not None:
            warm = self._from_cache(user_id, user)
            if warm is not None:
                return warm
        try:
            async with asyncio.timeout(self._timeout):
                user = await self._runtime.auth.authenticate(token)
                warm = self._from_cache(user_id, user)
                if warm is not None:
                    return warm
                user_wire = self._user_wire(user)
                generation = self._generation
                teams, _ = await self._runtime.teams.teams_of(user_id, limit=MAX_TEAMS)
                tasks, _ = await self._runtime.tasks.assigned_to(user_id, limit=MAX_TASKS)
        except DatabaseUnavailable:
            self._watch.failed("fetch", "database")
            return fallback(user_id)
        except TimeoutError:
            self._watch.failed("fetch", "timeout")
            return fallback(user_id)
        self._watch.succeeded()
        team_wires = [wire(team) for team in teams]
        task_wires = [wire(task) for task in tasks]
        if generation == self._generation:
            self._remember(user_id, team_wires, task_wires)
        return UserData(user_wire, team_wires, task_wires)

    def _from_cache(self, user_id: int, user: Any) -> UserData | None:
        """The user's data from the warm cache, or None when it is not (or no longer) there."""
        if user.id != user_id:
            raise TokenInvalid()
        cached = self._cache.get(user_id)
        if cached is None or time.monotonic() - cached[0] >= self._ttl:
            return None
        self._watch.succeeded()
        return UserData(self._user_wire(user), cached[1], cached[2])

    def _user_wire(self, user: Any) -> dict[str, Any]:
        """The wire form of a user row, built once per row object.

        `AuthService` hands out the same cached row until it reloads or drops
        it; a reloaded row is a new object and gets a new wire form.
        """
        entry = self._user_wires.get(user.id)
        if entry is not None and entry[0] is user:
            return entry[1]
        user_wire = wire(UserOut.model_validate(user))
        if len(self._user_wires) >= USER_WIRE_CACHE_SIZE:
            self._user_wires.pop(next(iter(self._user_wires)))
        self._user_wires[user.id] = (user, user_wire)
        return user_wire

    def _remember(
        self, user_id: int, teams: list[dict[str, Any]], tasks: list[dict[str, Any]]
    ) -> None:
        self._drop(user_id)
        self._cache[user_id] = (time.monotonic(), teams, tasks)
        for team in teams:
            self._members.setdefault(int(team["id"]), set()).add(user_id)

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
        self._generation += 1
        self._drop(user_id)

    def _drop(self, user_id: int) -> None:
        entry = self._cache.pop(user_id, None)
        if entry is None:
            return
        for team in entry[1]:
            members = self._members.get(int(team["id"]))
            if members is not None:
                members.discard(user_id)
                if not members:
                    del self._members[int(team["id"])]

    def invalidate_team(self, team_id: int) -> None:
        """Drop every cached user of a team."""
        self._generation += 1
        for user_id in list(self._members.get(team_id, ())):
            self._drop(user_id)

    async def _on_event(self, event: Envelope) -> None:
        if event.id is None and event.type != SESSIONS_REVOKED:
            return  # presence and other control messages change no data
        if event.team_id is not None:
            self.invalidate_team(event.team_id)
        if event.subject_user_id is not None:
            self.invalidate(event.subject_user_id)

    def on_recovered(self, callback: RecoveredCallback) -> None:
        self._watch.on_recovered(callback)

    async def start(self) -> None:
        if not self._subscribed:
            self._runtime.bus.subscribe(self._on_event)
            self._subscribed = True
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
