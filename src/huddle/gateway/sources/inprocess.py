"""`InProcessSource`: user data straight from the services, under `huddle serve`.

The contract is `huddle.gateway.sources.base.UserDataSource`. This is the only
part of the gateway that touches the database (through the services), so only
the composition root of `huddle serve` imports it; `huddle gateway` never does.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from huddle.errors import BackendUnavailable, DatabaseUnavailable, TokenInvalid
from huddle.events.types import StaleData
from huddle.gateway.sources.base import (
    MAX_TASKS,
    MAX_TEAMS,
    RecoveredCallback,
    RefreshedTokens,
    Replay,
    UserData,
    fallback,
)
from huddle.gateway.sources.recovery import RecoveryWatch
from huddle.schemas import UserOut, wire
from huddle.security.tokens import Claims
from huddle.services.events import EventService

if TYPE_CHECKING:
    from huddle.runtime import Runtime

USER_WIRE_CACHE_SIZE = 10_000
"""User rows whose wire form is kept (the size of `AuthService`'s row cache)."""


class InProcessSource:
    """User data straight from the services, with a warm per-user cache.

    Under `huddle serve` every committed change passes through this process's
    bus in order, and the relay hands each event's stale data to `invalidate`
    (the event catalogue says whose), so the cache can be exact. A cached
    entry still has its user checked on every fetch (active, not revoked:
    `AuthService.user_for_claims`).
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

    @property
    def healthy(self) -> bool:
        return self._watch.healthy

    async def fetch(self, claims: Claims, token: str) -> UserData:
        # The warm path — user row and teams and tasks all cached — does no I/O,
        # so it needs no timeout (arming one costs more than the rest of it).
        user_id = claims.user_id
        user = self._runtime.auth.cached_user_for_claims(claims)
        if user is not None:
            warm = self._from_cache(user_id, user)
            if warm is not None:
                return warm
        try:
            async with asyncio.timeout(self._timeout):
                generation = self._generation
                read = await self._runtime.users.bootstrap(
                    user_id, max_teams=MAX_TEAMS, max_tasks=MAX_TASKS
                )
        except DatabaseUnavailable:
            self._watch.failed("fetch", "database")
            return fallback(user_id)
        except TimeoutError:
            self._watch.failed("fetch", "timeout")
            return fallback(user_id)
        self._watch.succeeded()
        user = self._runtime.auth.admit(read.user, claims)
        if generation == self._generation:
            self._remember(user_id, read.teams, read.tasks)
        return UserData(self._user_wire(user, read.user_wire), read.teams, read.tasks)

    def _from_cache(self, user_id: int, user: Any) -> UserData | None:
        """The user's data from the warm cache, or None when it is not (or no longer) there."""
        if user.id != user_id:
            raise TokenInvalid()
        cached = self._cache.get(user_id)
        if cached is None or time.monotonic() - cached[0] >= self._ttl:
            return None
        self._watch.succeeded()
        return UserData(self._user_wire(user), cached[1], cached[2])

    def _user_wire(self, user: Any, known: dict[str, Any] | None = None) -> dict[str, Any]:
        """The wire form of a user row (`known` when the read built it), once per row object.

        `AuthService` hands out the same cached row until it reloads or drops
        it; a reloaded row is a new object and gets a new wire form.
        """
        entry = self._user_wires.get(user.id)
        if entry is not None and entry[0] is user:
            return entry[1]
        user_wire = known if known is not None else wire(UserOut.model_validate(user))
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

    def invalidate(self, stale: StaleData) -> None:
        if not stale:
            return
        self._generation += 1
        for team_id in stale.teams:
            for user_id in list(self._members.get(team_id, ())):
                self._drop(user_id)
        for user_id in stale.users:
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
