"""The last good user data per user, for a gateway whose backend fails (SPEC §4.5).

Entries live `ttl` seconds (60 by default) in process memory and, with
REDIS_URL, in Redis as JSON under `<prefix>:userdata:<user id>`, so that every
gateway instance can serve a user another instance fetched. Redis is best
effort: any Redis error falls back to the memory copy, and is logged once per
outage.

`drop(stale)` forgets the users an event made stale at once, locally and (in
the background) in Redis, and remembers when — for them and for the teams an
event made stale as a whole — so an entry written by a fetch that *started*
before the drop (which may hold the data the change made stale) is ignored on
read, whichever instance wrote it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from huddle.events.types import StaleData
from huddle.gateway.sources.base import UserData
from huddle.logging import get_logger

log = get_logger("huddle.gateway.sources.cache")

MAX_ENTRIES = 10_000
"""Memory entries kept at most (least recently stored dropped first)."""

REDIS_TIMEOUT = 0.25
"""Seconds one Redis cache operation may take before the memory copy is used."""


class UserDataCache:
    def __init__(
        self,
        *,
        ttl: float = 60.0,
        redis_url: str | None = None,
        prefix: str = "huddle",
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.ttl = ttl
        self._max = max_entries
        # user id -> (stored at, wall-clock seconds; data without `degraded`)
        self._memory: OrderedDict[int, tuple[float, dict[str, Any]]] = OrderedDict()
        # user id -> when it was last dropped (wall clock, comparable across instances)
        self._dropped: dict[int, float] = {}
        # team id -> when every member's entry was last dropped (a team-wide event)
        self._team_dropped: dict[int, float] = {}
        self._prefix = f"{prefix}:userdata:"
        self._redis: aioredis.Redis | None = None
        if redis_url:
            self._redis = aioredis.Redis.from_url(
                redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
            )
        self._redis_ok = True
        self._background: set[asyncio.Task[None]] = set()

    def key(self, user_id: int) -> str:
        return f"{self._prefix}{user_id}"

    async def get(self, user_id: int) -> UserData | None:
        """The user's data stored less than `ttl` ago and not dropped since; else None."""
        entry: tuple[float, dict[str, Any]] | None = None
        if self._redis is not None:
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    raw = await self._redis.get(self.key(user_id))
                self._redis_up()
                entry = _decode(raw) if raw is not None else None
            except (RedisError, OSError, TimeoutError) as exc:
                self._redis_down(exc)
                entry = self._memory.get(user_id)
        else:
            entry = self._memory.get(user_id)
        if entry is None:
            return None
        stored_at, data = entry
        now = time.time()
        if now - stored_at >= self.ttl or stored_at <= self._dropped.get(user_id, 0.0):
            return None
        marks = self._team_dropped
        if marks and any(stored_at <= marks.get(_team_id(t), 0.0) for t in data["teams"]):
            return None
        return UserData(user=data["user"], teams=data["teams"], tasks=data["tasks"])

    async def put(self, user_id: int, data: UserData, *, started_at: float) -> None:
        """Store fresh data fetched by a call that started at `started_at` (wall clock).

        A drop since that start wins: the data may predate the change, so it is
        not stored.
        """
        if started_at <= self._dropped.get(user_id, 0.0):
            return
        if any(started_at <= self._team_dropped.get(team_id, 0.0) for team_id in data.team_ids):
            return
        value = {"user": data.user, "teams": data.teams, "tasks": data.tasks}
        self._memory[user_id] = (started_at, value)
        self._memory.move_to_end(user_id)
        while len(self._memory) > self._max:
            self._memory.popitem(last=False)
        if self._redis is None:
            return
        raw = json.dumps({"storedAt": started_at, **value}, separators=(",", ":"))
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._redis.set(self.key(user_id), raw, px=int(self.ttl * 1000))
            self._redis_up()
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_down(exc)

    def drop(self, stale: StaleData) -> None:
        """Forget what an event made stale: its users now (memory, and Redis as soon as
        the event loop runs), and any entry naming one of its teams that was stored
        before now (a mark checked on read; every instance sees every event)."""
        now = time.time()
        for team_id in stale.teams:
            self._team_dropped[team_id] = now
        for user_id in stale.users:
            self._memory.pop(user_id, None)
            self._dropped[user_id] = now
            if self._redis is not None:
                self._in_background(self._redis_delete(user_id))
        if len(self._dropped) + len(self._team_dropped) > self._max:
            # A mark older than the TTL guards nothing: every entry it could hide expired.
            horizon = now - self.ttl
            self._dropped = {uid: at for uid, at in self._dropped.items() if at > horizon}
            self._team_dropped = {t: at for t, at in self._team_dropped.items() if at > horizon}

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:
            work.close()  # no loop (a synchronous caller): the drop mark still hides the entry
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def _redis_delete(self, user_id: int) -> None:
        if self._redis is None:
            return
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self._redis.delete(self.key(user_id))
            self._redis_up()
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_down(exc)

    def _redis_down(self, exc: BaseException) -> None:
        if self._redis_ok:
            log.warning("userdata_cache_redis_unavailable", error=type(exc).__name__)
        self._redis_ok = False

    def _redis_up(self) -> None:
        if not self._redis_ok:
            log.info("userdata_cache_redis_recovered")
        self._redis_ok = True


def _decode(raw: bytes | str) -> tuple[float, dict[str, Any]] | None:
    """A Redis entry, or None when it is not one of ours (treated as a miss)."""
    try:
        data = json.loads(raw)
        value = {"user": dict(data["user"]), "teams": list(data["teams"])}
        value["tasks"] = list(data["tasks"])
        return float(data["storedAt"]), value
    except (ValueError, KeyError, TypeError):
        return None


def _team_id(team: Any) -> int:
    try:
        return int(team["id"])
    except (KeyError, TypeError, ValueError):
        return 0
