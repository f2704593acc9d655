"""`InProcessSource`: user data straight from the services, under `huddle serve`.

The contract is `huddle.gateway.sources.base.UserDataSource`. This is the only
part of the gateway that touches the database (through the services), so only
the composition root of `huddle serve` imports it; `huddle gateway` never does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from huddle.errors import BackendUnavailable, DatabaseUnavailable
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
from huddle.gateway.sources.batch import Coalescer
from huddle.gateway.sources.recovery import RecoveryWatch
from huddle.security.tokens import Claims
from huddle.services.events import EventService
from huddle.services.users import Account, Bootstrap

if TYPE_CHECKING:
    from huddle.runtime import Runtime


@dataclass(frozen=True, slots=True)
class _Entry:
    """A user's cached data, as one JSON document: a few hundred bytes per user instead of
    the dicts' few kilobytes (a gateway keeps an entry per user who connected lately)."""

    stored_at: float
    team_ids: tuple[int, ...]
    data: bytes
    """`[teams, tasks]` in wire form, as JSON."""


MAX_BATCH = 100
"""Users per batched cold read: the `IN` lists of `UserService.bootstrap_many`."""

_NOBODY = Bootstrap(None, [], [])


def _unpack(account: Account, entry: _Entry) -> UserData:
    # The user's own part comes from the account, which reloads on its own schedule
    # (and at once when the account changes), never from this entry.
    teams, tasks = orjson.loads(entry.data)
    return UserData(account.wire(), teams, tasks)


class InProcessSource:
    """User data straight from the services, with a warm per-user cache.

    Under `huddle serve` every committed change passes through this process's
    bus in order, and the relay hands each event's stale data to `invalidate`
    (the event catalogue says whose), so the cache can be exact. A cached
    entry still has its user checked on every fetch (active, not revoked:
    `AuthService.user_for_claims`).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        probe_interval: float = 2.0,
        cache_ttl: float = 60.0,
        batch_window: float = 0.0,
        batched: bool | None = None,
    ) -> None:
        self._runtime = runtime
        self._timeout = runtime.settings.backend_timeout
        self._events = EventService(runtime.db)
        self._watch = RecoveryWatch(self._probe, interval=probe_interval)
        self._ttl = cache_ttl
        self._cache: dict[int, _Entry] = {}
        self._members: dict[int, set[int]] = {}  # team id -> cached users in it
        self._generation = 0  # bumped by every invalidation; a fetch older than it stores nothing
        # Cold reads of sockets that authenticate together (a reconnect storm, a
        # restart) share one read of the three statements for up to MAX_BATCH users,
        # on a database across a connection: on PostgreSQL a user read alone costs
        # ~900 µs of this process's CPU (round trips through asyncpg), ~190 µs in
        # a batch of 3 and ~63 µs in one of 10 (bench/bootstrap_reads.py). Not on
        # SQLite, read inline without a round trip (accel/sqlalchemy.py): there the
        # storm's batches are small and their window queries cost more than three
        # indexed reads per user (+4 % instructions per storm handshake, callgrind).
        # A lone socket waits for nothing: the window is one loop turn. Figures:
        # docs/benchmarks.md ("This round's changes").
        self._batched = (
            batched if batched is not None else runtime.db.engine.dialect.name != "sqlite"
        )
        self._batches: Coalescer[int, Bootstrap] = Coalescer(
            self._read_batch, window=batch_window, max_batch=MAX_BATCH, max_in_flight=2
        )

    @property
    def healthy(self) -> bool:
        return self._watch.healthy

    async def fetch(self, claims: Claims, token: str) -> UserData:
        user_id = claims.user_id
        # The warm path — account and data both cached — does no I/O, so it needs
        # no timeout (arming one costs more than the rest of it).
        account = self._runtime.auth.cached_user_for_claims(claims)
        entry = self._entry(user_id)
        if account is not None and entry is not None:
            self._watch.succeeded()
            return _unpack(account, entry)
        try:
            async with asyncio.timeout(self._timeout):
                if entry is not None:
                    account = await self._runtime.auth.user_for_claims(claims)
                    self._watch.succeeded()
                    return _unpack(account, entry)
                generation = self._generation
                read = await (self._batches.get(user_id) if self._batched else self._read(user_id))
        except DatabaseUnavailable:
            self._watch.failed("fetch", "database")
            return fallback(user_id)
        except TimeoutError:
            self._watch.failed("fetch", "timeout")
            return fallback(user_id)
        self._watch.succeeded()
        account = self._runtime.auth.admit(read.user, claims)
        if generation == self._generation:
            self._remember(user_id, read.teams, read.tasks)
        return UserData(account.wire(), read.teams, read.tasks, head=read.head)

    async def _read_batch(
        self, user_ids: list[int], first_asked: float
    ) -> dict[int, Bootstrap | BaseException]:
        """One read for every user asked for since the last batch left; a user without
        a row gets an empty `Bootstrap`, refused by `admit` as a lone read would be."""
        if len(user_ids) == 1:
            (user_id,) = user_ids
            return {user_id: await self._read(user_id)}
        reads = await self._runtime.users.bootstrap_many(
            user_ids, max_teams=MAX_TEAMS, max_tasks=MAX_TASKS
        )
        return {user_id: reads.get(user_id, _NOBODY) for user_id in user_ids}

    async def _read(self, user_id: int) -> Bootstrap:
        """One user's cold read on its own."""
        return await self._runtime.users.bootstrap(
            user_id, max_teams=MAX_TEAMS, max_tasks=MAX_TASKS
        )

    def _entry(self, user_id: int) -> _Entry | None:
        entry = self._cache.get(user_id)
        if entry is None or time.monotonic() - entry.stored_at >= self._ttl:
            return None
        return entry

    def _remember(
        self, user_id: int, teams: list[dict[str, Any]], tasks: list[dict[str, Any]]
    ) -> None:
        self._drop(user_id)
        team_ids = tuple(int(team["id"]) for team in teams)
        # orjson hands back its whole working buffer (8 KB for a 1 KB document); a copy
        # of exactly the document's length is what stays in the cache.
        data = bytes(memoryview(orjson.dumps((teams, tasks))))
        self._cache[user_id] = _Entry(time.monotonic(), team_ids, data)
        for team_id in team_ids:
            self._members.setdefault(team_id, set()).add(user_id)

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
        for team_id in entry.team_ids:
            members = self._members.get(team_id)
            if members is not None:
                members.discard(user_id)
                if not members:
                    del self._members[team_id]

    def on_recovered(self, callback: RecoveredCallback) -> None:
        self._watch.on_recovered(callback)

    async def start(self) -> None:
        await self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()
        await self._batches.aclose()

    async def _probe(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._runtime.db.read() as session:
                    await session.execute(text("SELECT 1"))
        except (DatabaseUnavailable, TimeoutError):
            self._watch.failed("probe", "database")
            raise
        self._watch.succeeded()
