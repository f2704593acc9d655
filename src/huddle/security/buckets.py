"""Token buckets behind one small protocol: in memory, or shared through Redis.

A bucket holds `capacity` tokens and refills one every `refill_ms`. It is kept
as a single number, the *theoretical arrival time* (TAT, in ms): the moment the
bucket will be full again. Taking `cost` tokens at `now` moves the TAT to
`max(TAT, now) + cost * refill_ms`, which is allowed while the new TAT stays
within `capacity * refill_ms` of `now`; a refusal changes nothing and says how
long until it would be allowed. This is GCRA, the token bucket written with one
integer instead of a count and a timestamp, so the Redis script is a GET and a
SET and the memory store keeps two integers per key.

State whose bucket has refilled is the same as no state, so it can go: a key is
dropped once it has not consumed for `max(window_ms, capacity * refill_ms)` —
the idle window of SPEC §5, stretched only for buckets that take longer than
the window to refill (the 15-minute login buckets), which dropping early would
hand a fresh burst.

Why hand-written: `limits` (5.x) offers fixed, moving and sliding windows but
no token bucket, and a window of N per T does not refill one attempt every
cooldown. `pyrate-limiter` 4.5 does have GCRA with an atomic Redis script, but
that layer is documented as internal until 5.0; its Redis state runs on each
caller's wall clock; its `Limiter` answers a bool and needs a second call for
the retry-after; and every key is a bucket object whose creation and eviction,
like the Redis fallback, would still be ours to write. What the libraries
would save is `_gcra` and `_LUA`, a few lines each.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from huddle.logging import get_logger

log = get_logger("huddle.ratelimit")

Clock = Callable[[], int]
"""Milliseconds from an arbitrary origin, never decreasing."""

STORE_ERRORS = Counter(
    "huddle_rate_limit_store_errors",
    "Rate-limit store calls that failed (the local fallback answered)",
)


def monotonic_ms() -> int:
    """The default clock."""
    return time.monotonic_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of a bucket.

    `retry_after_ms` is 0 when allowed, else the wait until the bucket has room;
    `remaining` is the whole tokens left after the decision.
    """

    allowed: bool
    retry_after_ms: int
    remaining: int


class BucketStore(Protocol):
    """Atomic token-bucket operations on keyed buckets.

    The key names a bucket; the same key must always be used with the same
    `capacity` and `refill_ms`. `now_ms` is for tests: left out, the store uses
    its own clock (the Redis server's for `RedisBucketStore`). State idle for
    the store's window is dropped by the store itself.
    """

    async def take(
        self, key: str, capacity: int, refill_ms: int, *, cost: int = 1, now_ms: int | None = None
    ) -> Decision:
        """Consume `cost` tokens if they are all there; otherwise consume nothing."""
        ...

    async def peek(
        self, key: str, capacity: int, refill_ms: int, *, cost: int = 1, now_ms: int | None = None
    ) -> Decision:
        """What `take` would answer, without consuming anything."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


def _validate(capacity: int, refill_ms: int, cost: int) -> None:
    if capacity < 1 or refill_ms < 1:
        raise ValueError("capacity and refill_ms must be at least 1")
    if not 1 <= cost <= capacity:
        raise ValueError("cost must be between 1 and capacity")


def _ttl(window_ms: int, capacity: int, refill_ms: int) -> int:
    return max(window_ms, capacity * refill_ms)


def _gcra(
    tat: int | None, now: int, capacity: int, refill_ms: int, cost: int
) -> tuple[Decision, int]:
    """The decision for a bucket whose TAT is `tat` (None: never used), and the TAT if taken."""
    current = now if tat is None or tat < now else tat
    new_tat = current + cost * refill_ms
    allow_at = new_tat - capacity * refill_ms
    if allow_at > now:
        remaining = (now + capacity * refill_ms - current) // refill_ms
        return Decision(False, allow_at - now, max(0, remaining)), current
    return Decision(True, 0, (now - allow_at) // refill_ms), new_tat


class MemoryBucketStore:
    """Buckets in this process's memory; the default, and Redis's fallback.

    Memory is bounded two ways: state is dropped as described in the module
    docstring, swept a little on every `take` (amortised O(1), no background
    task), and never more than `max_keys` are kept (about 250 bytes each) —
    past that the longest-unused bucket of the fullest lane goes, which hands
    one client a fresh bucket rather than refusing anyone.
    """

    def __init__(
        self, *, window_ms: int = 60_000, clock: Clock = monotonic_ms, max_keys: int = 200_000
    ) -> None:
        if window_ms < 1 or max_keys < 1:
            raise ValueError("window_ms and max_keys must be at least 1")
        self._window_ms = window_ms
        self._clock = clock
        self._max_keys = max_keys
        self._size = 0
        # One lane per time-to-live; within a lane, oldest use first, so the
        # sweep only ever looks at the front.
        self._lanes: dict[int, OrderedDict[str, tuple[int, int]]] = {}

    def __len__(self) -> int:
        """How many buckets are held."""
        return self._size

    async def take(
        self, key: str, capacity: int, refill_ms: int, *, cost: int = 1, now_ms: int | None = None
    ) -> Decision:
        return self.take_sync(key, capacity, refill_ms, cost=cost, now_ms=now_ms)

    async def peek(
        self, key: str, capacity: int, refill_ms: int, *, cost: int = 1, now_ms: int | None = None
    ) -> Decision:
        _validate(capacity, refill_ms, cost)
        now = self._clock() if now_ms is None else now_ms
        lane = self._lanes.get(_ttl(self._window_ms, capacity, refill_ms))
        state = lane.get(key) if lane is not None else None
        return _gcra(state[0] if state else None, now, capacity, refill_ms, cost)[0]

    def take_sync(
        self, key: str, capacity: int, refill_ms: int, *, cost: int = 1, now_ms: int | None = None
    ) -> Decision:
        """`take` without the coroutine, for callers on a hot path."""
        _validate(capacity, refill_ms, cost)
        now = self._clock() if now_ms is None else now_ms
        self.evict(now)
        lane = self._lanes.setdefault(_ttl(self._window_ms, capacity, refill_ms), OrderedDict())
        state = lane.get(key)
        decision, tat = _gcra(state[0] if state else None, now, capacity, refill_ms, cost)
        if not decision.allowed:
            return decision
        if state is None:
            self._size += 1
            if self._size > self._max_keys:
                self._drop_oldest()
        lane[key] = (tat, now)
        lane.move_to_end(key)
        return decision

    def evict(self, now_ms: int | None = None) -> int:
        """Drop every bucket past its time to live; returns how many went."""
        now = self._clock() if now_ms is None else now_ms
        dropped = 0
        for ttl, lane in self._lanes.items():
            horizon = now - ttl
            while lane:
                key, (_, used) = next(iter(lane.items()))
                if used > horizon:
                    break
                del lane[key]
                dropped += 1
        self._size -= dropped
        return dropped

    def clear(self) -> None:
        """Forget every bucket."""
        self._lanes.clear()
        self._size = 0

    async def aclose(self) -> None:
        self.clear()

    def _drop_oldest(self) -> None:
        lane = max(self._lanes.values(), key=len)
        lane.popitem(last=False)
        self._size -= 1


# KEYS[1] the bucket. ARGV: capacity, refill_ms, cost, ttl_ms, consume (1/0),
# now_ms ("" = the server's TIME). The server's clock by default, so instances
# whose clocks disagree still share one timeline; scripts may call TIME since
# Redis replicates their effects, not the script. Returns {allowed, retry, left}.
_LUA = """
local capacity = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[6])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + cost * refill
local allow_at = new_tat - capacity * refill
if allow_at > now then
  return {0, allow_at - now, math.floor((now + capacity * refill - tat) / refill)}
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', tonumber(ARGV[4]))
end
return {1, 0, math.floor((now - allow_at) / refill)}
"""


class RedisBucketStore:
    """Buckets in Redis, shared exactly by every instance: one script call per check.

    Keys are `<prefix>:rl:<key>` and expire on their own (see the module
    docstring). When Redis fails, the call is answered by a local
    `MemoryBucketStore` — limits then hold per instance instead of globally, and
    nobody is refused because Redis is away. The outage is logged once and every
    failed call is counted in `huddle_rate_limit_store_errors_total`; Redis is
    tried again every `probe_ms`, and the first success ends the outage.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "huddle",
        window_ms: int = 60_000,
        probe_ms: int = 1_000,
        clock: Clock = monotonic_ms,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._prefix = f"{prefix}:rl:"
        self._window_ms = window_ms
        self._probe_ms = probe_ms
        self._clock = clock
        self._script = client.register_script(_LUA)
        self._fallback = MemoryBucketStore(window_ms=window_ms, clock=clock)
        self._retry_at: int | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBucketStore:
        """A store with its own connection pool, tuned to fail fast.

        Half a second per attempt and one immediate retry (which heals a pooled
        connection that died with a Redis restart): a connection attempt must
        not wait on redis-py's default of ten backed-off retries.
        """
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        )
        return cls(client, owns_client=True, **options)

    @property
    def degraded(self) -> bool:
        """True while Redis is failing and the local fallback answers."""
        return self._retry_at is not None

    async def take(
        self, key: str, capacity: int, refill_ms: int, *, cost: int = 1, now_ms: int | None = None
    ) -> Decision:
        return await self._call(key, capacity, refill_ms, cost, now_ms, consume=True)

    async def peek(
        self, key: str, capacity: int, refill_ms: int, *, cost: int = 1, now_ms: int | None = None
    ) -> Decision:
        return await self._call(key, capacity, refill_ms, cost, now_ms, consume=False)

    async def aclose(self) -> None:
        await self._fallback.aclose()
        if self._owns_client:
            await self._client.aclose()

    async def _call(
        self,
        key: str,
        capacity: int,
        refill_ms: int,
        cost: int,
        now_ms: int | None,
        *,
        consume: bool,
    ) -> Decision:
        _validate(capacity, refill_ms, cost)
        if self._retry_at is not None and self._clock() < self._retry_at:
            return await self._local(key, capacity, refill_ms, cost, now_ms, consume=consume)
        ttl_ms = _ttl(self._window_ms, capacity, refill_ms)
        now_arg = "" if now_ms is None else str(now_ms)
        args = [capacity, refill_ms, cost, ttl_ms, 1 if consume else 0, now_arg]
        try:
            reply = await self._script(keys=[self._prefix + key], args=args)
        except (RedisError, OSError) as exc:
            STORE_ERRORS.inc()
            if self._retry_at is None:
                # The exception type only: its text may carry the URL and its password.
                log.warning("ratelimit_store_unavailable", error=type(exc).__name__)
            self._retry_at = self._clock() + self._probe_ms
            return await self._local(key, capacity, refill_ms, cost, now_ms, consume=consume)
        if self._retry_at is not None:
            self._retry_at = None
            self._fallback.clear()
            log.info("ratelimit_store_recovered")
        allowed, retry_after_ms, remaining = (int(value) for value in reply)
        return Decision(allowed == 1, retry_after_ms, max(0, remaining))

    async def _local(
        self,
        key: str,
        capacity: int,
        refill_ms: int,
        cost: int,
        now_ms: int | None,
        *,
        consume: bool,
    ) -> Decision:
        if consume:
            return await self._fallback.take(key, capacity, refill_ms, cost=cost, now_ms=now_ms)
        return await self._fallback.peek(key, capacity, refill_ms, cost=cost, now_ms=now_ms)
