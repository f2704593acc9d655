"""Presence shared by every gateway instance through Redis.

Keys, under the settings' REDIS_PREFIX:

    <prefix>:presence:live          zset  instance id -> deadline (ms, Redis clock)
    <prefix>:presence:i:<instance>  hash  user id -> the teams it has sockets in there ("3,7")
    <prefix>:presence:t:<team>      hash  user id -> how many instances hold it in the team

A user is online in a team while the team hash lists them. Only the scripts
below write these keys, and each keeps the team hashes equal to the sum of the
instance hashes, so every transition (a count going 0 -> 1 or 1 -> 0) is seen
by exactly one script run. That run appends one `presence_changed` control
message per user and direction to the bus stream (`huddle.events.bus`), in the
same atomic step: every instance reads the stream in one order, so the last
message a client gets about a user is the truth, even when two instances race.

`SYNC` sets this instance's entry for some users to what `Presence` (the local
counts) says now. It is idempotent, so the hub's flips only mark a user dirty
and a single writer task sends the dirty users in one pipelined round trip,
coalescing bursts: a socket connecting costs no Redis call of its own, and a
flap within one batch costs no message at all.

Instances announce themselves in the `live` zset and refresh their deadline
(TTL 15 s) every 5 s (`BEAT`) and on every `SYNC`. A beat also reaps instances
whose deadline has passed, a few hundred users per call: their users leave the
team hashes, and those that thereby go offline are announced. An instance that
finds it had expired or was unknown (a long pause, Redis restarted or
flushed) sends its whole state again. At shutdown `RETIRE` removes this
instance at once rather than after the TTL.

When Redis fails, `changed` answers True — the hub then announces the flip to
its own room, exactly like `MemoryPresence` — and `online` answers with this
instance's users. The failure is logged once and counted; the writer retries
with backoff, and once Redis answers it sends its whole state again, so
transitions that happened meanwhile reach the other instances.

The scripts name the team and instance hashes they touch from a prefix, not in
KEYS: this needs a single Redis server (or one hash slot), like the rest of
Huddle's Redis use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError, RedisError

from huddle.events.bus import STREAM_MAXLEN, stream_key
from huddle.gateway.realtime.presence.local import Presence
from huddle.logging import get_logger

log = get_logger("huddle.gateway.presence")

STORE_ERRORS = Counter(
    "huddle_presence_store_errors",
    "Presence store calls to Redis that failed (this instance's presence answered)",
)

TTL = 15.0
"""Seconds an instance counts after its last beat or sync."""
BEAT_EVERY = 5.0
QUERY_TIMEOUT = 1.0
"""Seconds `online` waits for Redis before answering with this instance's users."""
SYNC_BATCH = 200
"""Users per SYNC call, so one call never holds Redis for long."""
REAP_BATCH = 500
"""Users of a gone instance removed per call."""
RETRY_MIN, RETRY_MAX = 0.1, 5.0
RETIRE_TIMEOUT = 2.0

_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- '3,7' -> {['3'] = true, ['7'] = true}; false (a missing field) -> {}
local function team_set(csv)
  local set = {}
  if csv then
    for id in string.gmatch(csv, '%d+') do set[id] = true end
  end
  return set
end

-- One instance fewer holds `user` in the team hash `key`; true when it was the last.
local function release(key, user)
  if redis.call('HEXISTS', key, user) == 0 then return false end
  if redis.call('HINCRBY', key, user, -1) > 0 then return false end
  redis.call('HDEL', key, user)
  return true
end

local function by_number(a, b) return tonumber(a) < tonumber(b) end

-- One presence_changed control message, in RedisBus's entry format (no id: not logged).
local function announce(stream, maxlen, origin, user, online, ids)
  if #ids == 0 then return 0 end
  table.sort(ids, by_number)
  local body = '{"type":"presence_changed","payload":{"userId":' .. user
    .. ',"online":' .. online .. ',"teamIds":[' .. table.concat(ids, ',') .. ']}}'
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', body, 'o', origin)
  return 1
end

-- Remove up to `budget` users of an instance that is gone; 1 while some remain.
local function reap(live, stream, maxlen, origin, key, team_prefix, instance, budget)
  local fields = redis.call('HRANDFIELD', key, budget, 'WITHVALUES')
  for j = 1, #fields, 2 do
    local user, down = fields[j], {}
    for team in pairs(team_set(fields[j + 1])) do
      if release(team_prefix .. team, user) then down[#down + 1] = team end
    end
    redis.call('HDEL', key, user)
    announce(stream, maxlen, origin, user, 'false', down)
  end
  if redis.call('EXISTS', key) == 1 then return 1 end
  redis.call('ZREM', live, instance)
  return 0
end
"""

# KEYS: live, this instance's hash, stream. ARGV: instance, team prefix, ttl ms,
# maxlen, origin, then per user: id, its teams here (csv), quiet teams (csv).
# Returns how many messages went out, or -1 (nothing done) when this instance
# is unknown or has expired: it must resend everything after a BEAT.
_SYNC = (
    _COMMON
    + """
local now = now_ms()
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) < now then return -1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
local sent = 0
for i = 6, #ARGV, 3 do
  local user = ARGV[i]
  local old = team_set(redis.call('HGET', KEYS[2], user))
  local new, quiet = team_set(ARGV[i + 1]), team_set(ARGV[i + 2])
  local up, down = {}, {}
  for team in pairs(new) do
    if not old[team] and redis.call('HINCRBY', ARGV[2] .. team, user, 1) == 1
        and not quiet[team] then
      up[#up + 1] = team
    end
  end
  for team in pairs(old) do
    if not new[team] and release(ARGV[2] .. team, user) and not quiet[team] then
      down[#down + 1] = team
    end
  end
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], user)
  else
    redis.call('HSET', KEYS[2], user, ARGV[i + 1])
  end
  sent = sent + announce(KEYS[3], ARGV[4], ARGV[5], user, 'true', up)
  sent = sent + announce(KEYS[3], ARGV[4], ARGV[5], user, 'false', down)
end
return sent
"""
)

# KEYS: live, stream. ARGV: instance, instance prefix, team prefix, ttl ms,
# maxlen, origin, reap budget. Returns {fresh, more}: fresh is 1 when this
# instance was unknown or had expired (its entries may be gone); more is 1 when
# gone instances still have users to reap.
_BEAT = (
    _COMMON
    + """
local now = now_ms()
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
local fresh = 0
if not deadline or tonumber(deadline) < now then fresh = 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
local more = 0
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now),
  'LIMIT', 0, 2)
if #gone > 0 then
  more = reap(KEYS[1], KEYS[2], ARGV[5], ARGV[6], ARGV[2] .. gone[1], ARGV[3], gone[1],
    tonumber(ARGV[7]))
  if #gone > 1 then more = 1 end
end
return {fresh, more}
"""
)

# KEYS: live, stream, this instance's hash. ARGV: instance, team prefix, maxlen,
# origin, budget. Marks this instance gone and reaps it; 1 while users remain.
_RETIRE = (
    _COMMON
    + """
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return reap(KEYS[1], KEYS[2], ARGV[3], ARGV[4], KEYS[3], ARGV[2], ARGV[1], tonumber(ARGV[5]))
"""
)


class _Script:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


SYNC, BEAT, RETIRE = _Script(_SYNC), _Script(_BEAT), _Script(_RETIRE)

Query = tuple[int, "asyncio.Future[list[int] | None]"]


def _csv(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(ids))


class RedisPresence:
    """A `PresenceStore` shared through Redis; see the module docstring."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "huddle",
        instance: str | None = None,
        ttl: float = TTL,
        beat_every: float = BEAT_EVERY,
        query_timeout: float = QUERY_TIMEOUT,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self.instance = instance or uuid.uuid4().hex
        self._live = f"{prefix}:presence:live"
        self._instance_prefix = f"{prefix}:presence:i:"
        self._own = self._instance_prefix + self.instance
        self._team_prefix = f"{prefix}:presence:t:"
        self._stream = stream_key(prefix)
        # Not the bus's own origin, so every instance's bus delivers the message, this one's too.
        self._origin = f"presence:{self.instance}"
        self._ttl_ms = int(ttl * 1000)
        self._beat_every = beat_every
        self._query_timeout = query_timeout
        self._local = Presence()
        # user id -> teams whose change must not be announced (deleted teams)
        self._dirty: dict[int, set[int]] = {}
        self._queries: list[Query] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._degraded = False
        self._needs_reconcile = True
        self._stopped = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisPresence:
        """A store with its own connection pool, tuned to notice an outage within seconds."""
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=1,
            socket_timeout=2,
            # One immediate retry heals a pooled connection that died with a Redis restart.
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        )
        return cls(client, owns_client=True, **options)

    @property
    def local(self) -> Presence:
        return self._local

    @property
    def degraded(self) -> bool:
        """True while Redis is failing and this instance's presence answers."""
        return self._degraded

    # --- PresenceStore -------------------------------------------------------

    def changed(self, team_id: int, user_id: int, *, quiet: bool = False) -> bool:
        quiet_teams = self._dirty.setdefault(user_id, set())
        if quiet:
            quiet_teams.add(team_id)
        self._wake.set()
        return self._degraded and not quiet

    async def online(self, team_id: int) -> list[int]:
        local = self._local.online(team_id)
        if self._degraded or self._task is None:
            return local
        future: asyncio.Future[list[int] | None] = asyncio.get_running_loop().create_future()
        # Queued behind this instance's pending syncs, so its own changes are in the answer.
        self._queries.append((team_id, future))
        self._wake.set()
        try:
            async with asyncio.timeout(self._query_timeout):
                remote = await future
        except TimeoutError:
            return local
        if remote is None:
            return local
        return sorted(set(remote).union(local))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="huddle-presence-writer")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._answer_locally(self._queries)
        self._queries = []
        try:
            async with asyncio.timeout(RETIRE_TIMEOUT):
                while await self._retire():
                    pass
        except (RedisError, OSError, TimeoutError) as exc:
            # The other instances will reap this one after the TTL.
            log.info("presence_retire_skipped", error=type(exc).__name__)
        if self._owns_client:
            await self._client.aclose()

    # --- the writer ------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        delay = RETRY_MIN
        while True:
            wait = next_beat - loop.time()
            if wait > 0 and not self._pending():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            self._wake.clear()
            try:
                if self._needs_reconcile or loop.time() >= next_beat:
                    more = await self._beat()
                    next_beat = loop.time() + (0.0 if more else self._beat_every)
                await self._flush()
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self._degraded:
                self._degraded = False
                log.info("presence_store_recovered")
            delay = RETRY_MIN

    def _pending(self) -> bool:
        return bool(self._dirty or self._queries or self._needs_reconcile)

    def _failed(self, exc: Exception) -> None:
        STORE_ERRORS.inc()
        if not isinstance(exc, RedisError | OSError):
            log.exception("presence_store_failed")
        elif not self._degraded:
            # The exception type only: its text may carry the URL and its password.
            log.warning("presence_store_unavailable", error=type(exc).__name__)
        self._degraded = True
        self._needs_reconcile = True

    async def _beat(self) -> bool:
        """Refresh this instance's deadline and reap a gone one; True when more is to reap."""
        args = (
            self.instance,
            self._instance_prefix,
            self._team_prefix,
            self._ttl_ms,
            STREAM_MAXLEN,
            self._origin,
            REAP_BATCH,
        )
        replies = await self._send(
            lambda pipe: pipe.evalsha(BEAT.sha, 2, self._live, self._stream, *args)
        )
        fresh, more = (int(value) for value in replies[0])
        if fresh or self._needs_reconcile:
            # Resend everything: what Redis holds for this instance, and what it should.
            stored = await self._client.hkeys(self._own)
            for user_id in {int(u) for u in stored}.union(self._local.users()):
                self._dirty.setdefault(user_id, set())
            self._needs_reconcile = False
        return more == 1

    async def _flush(self) -> None:
        """Send every dirty user's state and answer the queued queries, in one round trip."""
        if not self._dirty and not self._queries:
            return
        dirty, self._dirty = self._dirty, {}
        queries, self._queries = self._queries, []
        users = list(dirty.items())
        batches = [users[i : i + SYNC_BATCH] for i in range(0, len(users), SYNC_BATCH)]
        head = (self.instance, self._team_prefix, self._ttl_ms, STREAM_MAXLEN, self._origin)

        def commands(pipe: Pipeline) -> None:
            for batch in batches:
                args: list[Any] = list(head)
                for user_id, quiet in batch:
                    # The truth at send time: later flips are in it, however they came.
                    args += [user_id, _csv(self._local.teams_of(user_id)), _csv(quiet)]
                pipe.evalsha(SYNC.sha, 3, self._live, self._own, self._stream, *args)
            for team_id, _future in queries:
                pipe.hkeys(self._team_prefix + str(team_id))

        try:
            replies = await self._send(commands)
        except BaseException:
            self._requeue(dirty)
            self._answer_locally(queries)
            raise
        if any(int(reply) < 0 for reply in replies[: len(batches)]):
            self._needs_reconcile = True  # expired or unknown: the next beat resends all
            self._requeue(dirty)
            self._wake.set()
        for (_team_id, future), reply in zip(queries, replies[len(batches) :], strict=True):
            if not future.done():
                future.set_result(sorted(int(user_id) for user_id in reply))

    def _requeue(self, dirty: dict[int, set[int]]) -> None:
        for user_id, quiet in dirty.items():
            self._dirty.setdefault(user_id, set()).update(quiet)

    @staticmethod
    def _answer_locally(queries: list[Query]) -> None:
        for _team_id, future in queries:
            if not future.done():
                future.set_result(None)

    async def _retire(self) -> bool:
        args = (self.instance, self._team_prefix, STREAM_MAXLEN, self._origin, REAP_BATCH)
        replies = await self._send(
            lambda pipe: pipe.evalsha(RETIRE.sha, 3, self._live, self._stream, self._own, *args)
        )
        return int(replies[0]) == 1

    async def _send(self, commands: Callable[[Pipeline], Any]) -> list[Any]:
        """Run `commands` in one pipelined round trip, loading the scripts if Redis lacks them."""
        try:
            return await self._pipeline(commands)
        except NoScriptError:
            for script in (SYNC, BEAT, RETIRE):
                await self._client.script_load(script.text)
            return await self._pipeline(commands)

    async def _pipeline(self, commands: Callable[[Pipeline], Any]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            commands(pipe)
            return list(await pipe.execute())
