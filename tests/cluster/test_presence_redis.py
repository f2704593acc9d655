"""RedisPresence against a real Redis: one transition per user and team, cluster-wide.

Several stores stand for several gateway instances sharing one Redis. What a
gateway would emit is read from the bus stream, where the store's scripts put
one `presence_changed` control message per transition. `await store.online()`
doubles as a barrier: it is answered in the same round trip as (after) every
change the store had queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from huddle.events.bus import RedisBus, stream_key
from huddle.events.envelope import Envelope
from huddle.gateway.realtime.presence.redis_store import RedisPresence
from tests.gateway.backend_api import TcpRelay

pytestmark = pytest.mark.redis

StoreFactory = Callable[..., Awaitable[RedisPresence]]
Message = tuple[int, bool, list[int]]


def store_errors() -> float:
    return REGISTRY.get_sample_value("huddle_presence_store_errors_total") or 0.0


@pytest.fixture
def prefix(redis_prefix: str, unique: str) -> str:
    return f"{redis_prefix}-presence-{unique}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_store(redis_url: str, prefix: str) -> AsyncIterator[StoreFactory]:
    stores: list[RedisPresence] = []

    async def make(url: str | None = None, **options: Any) -> RedisPresence:
        store = RedisPresence.from_url(url or redis_url, prefix=prefix, **options)
        stores.append(store)
        await store.start()
        return store

    yield make
    for store in stores:
        await store.stop()


async def messages(redis: aioredis.Redis, prefix: str) -> list[Message]:
    """Every presence message on the stream so far: (user, online, teams)."""
    found = []
    for _entry, fields in await redis.xrange(stream_key(prefix)):
        event = Envelope.from_json(fields[b"e"])
        if event.type == "presence_changed":
            payload = event.payload
            found.append((payload["userId"], payload["online"], payload["teamIds"]))
    return found


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


def join(store: RedisPresence, team_id: int, user_id: int) -> None:
    """One socket of `user_id` enters the team's room on this instance (what the hub does)."""
    if store.local.join(team_id, user_id):
        assert store.changed(team_id, user_id) is False  # the cluster announces it


def leave(store: RedisPresence, team_id: int, user_id: int) -> None:
    if store.local.leave(team_id, user_id):
        assert store.changed(team_id, user_id) is False


async def test_first_socket_anywhere_and_last_socket_anywhere_are_one_transition_each(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    x, y = await make_store(), await make_store()
    join(x, 1, 10)
    assert await x.online(1) == [10]
    assert await messages(redis, prefix) == [(10, True, [1])]

    join(y, 1, 10)
    join(y, 1, 10)
    assert await y.online(1) == [10]
    join(x, 1, 11)
    assert await x.online(1) == [10, 11]
    assert await y.online(1) == [10, 11]  # 11 is only on x
    leave(x, 1, 10)
    assert await x.online(1) == [10, 11]  # still on y
    assert await messages(redis, prefix) == [(10, True, [1]), (11, True, [1])]

    leave(y, 1, 10)
    assert await y.online(1) == [10, 11]  # one socket of 10 left on y
    leave(y, 1, 10)
    assert await y.online(1) == [11]
    assert await x.online(1) == [11]
    assert (await messages(redis, prefix))[2:] == [(10, False, [1])]


async def test_one_message_names_every_team_a_user_came_online_in(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    x = await make_store()
    for team_id in (3, 1, 2):
        join(x, team_id, 10)
    await x.online(1)
    assert await messages(redis, prefix) == [(10, True, [1, 2, 3])]


async def test_a_socket_that_comes_and_goes_before_the_next_write_costs_nothing(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    x = await make_store()
    join(x, 1, 10)
    leave(x, 1, 10)
    assert await x.online(1) == []
    assert await messages(redis, prefix) == []
    assert await redis.exists(f"{prefix}:presence:t:1") == 0


async def test_instances_racing_for_a_users_first_and_last_socket_announce_each_once(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    stores = [await make_store() for _ in range(6)]
    for store in stores:
        join(store, 1, 10)
    await asyncio.gather(*(store.online(1) for store in stores))
    for store in stores:
        leave(store, 1, 10)
    await asyncio.gather(*(store.online(1) for store in stores))
    assert await messages(redis, prefix) == [(10, True, [1]), (10, False, [1])]


async def test_a_deleted_team_is_dropped_without_a_message(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    x = await make_store()
    join(x, 1, 10)
    join(x, 2, 10)
    await x.online(1)
    for user_id in x.local.drop_team(1):
        assert x.changed(1, user_id, quiet=True) is False
    assert await x.online(1) == []
    assert await x.online(2) == [10]
    assert await messages(redis, prefix) == [(10, True, [1, 2])]


async def test_stopping_takes_the_instances_users_offline_at_once(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    x, y = await make_store(), await make_store()
    join(x, 1, 10)
    join(x, 2, 11)
    join(y, 2, 11)
    await x.online(1)
    await y.online(2)
    await x.stop()
    assert await y.online(1) == []
    assert await y.online(2) == [11]
    assert (await messages(redis, prefix))[-1] == (10, False, [1])
    assert await redis.zscore(f"{prefix}:presence:live", x.instance) is None
    assert await redis.exists(f"{prefix}:presence:i:{x.instance}") == 0


async def test_an_instance_cut_off_from_redis_is_reaped_after_its_ttl_and_comes_back(
    make_store: StoreFactory, redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """A crashed or partitioned instance's users go offline everywhere once its TTL passes."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    relay = TcpRelay(port)
    await relay.start()
    timing = {"ttl": 0.6, "beat_every": 0.15}
    try:
        cut = await make_store(f"redis://127.0.0.1:{relay.port}/0", **timing)
        watcher = await make_store(**timing)
        join(cut, 1, 10)
        await eventually(lambda: _online_is(watcher, 1, [10]))

        await relay.stop()
        with capture_logs() as logs:
            await eventually(lambda: _online_is(watcher, 1, []))
            # Meanwhile the cut-off instance answers for its own users and announces itself.
            assert cut.degraded
            assert await cut.online(1) == [10]
            assert cut.local.join(2, 10)
            assert cut.changed(2, 10) is True
        assert [e["event"] for e in logs if e["event"].startswith("presence_store")] == [
            "presence_store_unavailable"
        ]
        assert (await messages(redis, prefix))[-1] == (10, False, [1])

        await relay.start()
        await eventually(lambda: _online_is(watcher, 2, [10]))
        assert await watcher.online(1) == [10]
        assert not cut.degraded
        assert (await messages(redis, prefix))[-1] == (10, True, [1, 2])
    finally:
        with contextlib.suppress(Exception):
            await relay.stop()


async def _online_is(store: RedisPresence, team_id: int, expected: list[int]) -> bool:
    return await store.online(team_id) == expected


async def test_an_instance_whose_entries_vanished_writes_them_again(
    make_store: StoreFactory, redis: aioredis.Redis, prefix: str
) -> None:
    """Redis restarted without persistence, or was flushed: the next beat restores presence."""
    x = await make_store(beat_every=0.1)
    join(x, 1, 10)
    await x.online(1)
    for key in await redis.keys(f"{prefix}:presence:*"):
        await redis.delete(key)
    await eventually(lambda: _hash_has(redis, f"{prefix}:presence:t:1", b"10"))
    assert await messages(redis, prefix) == [(10, True, [1]), (10, True, [1])]


async def _hash_has(redis: aioredis.Redis, key: str, field: bytes) -> bool:
    return bool(await redis.hexists(key, field))


async def test_unreachable_redis_leaves_each_instance_its_own_presence(
    make_store: StoreFactory,
) -> None:
    before = store_errors()
    with capture_logs() as logs:
        store = await make_store("redis://127.0.0.1:1/0")
        await eventually(lambda: _degraded(store))
        store.local.join(1, 10)
        assert store.changed(1, 10) is True  # the hub announces it to its own room
        assert await store.online(1) == [10]
        await store.stop()  # does not hang on the missing Redis
    assert store_errors() > before
    events = [entry["event"] for entry in logs]
    assert events.count("presence_store_unavailable") == 1
    assert "127.0.0.1:1" not in str(logs)


async def _degraded(store: RedisPresence) -> bool:
    return store.degraded


async def test_a_starting_gateway_finds_the_newest_event_behind_presence_messages(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    """`lastEventId` must not be null because the newest stream entries are control messages."""
    logged = Envelope(type="task_created", payload={"eventId": 41}, id=41, team_id=1)
    await redis.xadd(stream_key(prefix), {"e": logged.to_json(), "o": "test"})
    async with redis.pipeline(transaction=False) as pipe:
        for user_id in range(1200):
            body = {"type": "presence_changed", "payload": {"userId": user_id, "online": True}}
            pipe.xadd(stream_key(prefix), {"e": json.dumps(body), "o": "presence:test"})
        await pipe.execute()
    bus = RedisBus(redis_url, prefix=prefix)
    await bus.start()
    try:
        assert bus.head == 41
    finally:
        await bus.stop()
