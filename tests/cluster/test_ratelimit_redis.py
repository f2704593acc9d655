"""RedisBucketStore against a real Redis: shared buckets, atomicity, outage and recovery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from huddle.security.buckets import RedisBucketStore

pytestmark = pytest.mark.redis

StoreFactory = Callable[..., RedisBucketStore]


def store_errors() -> float:
    return REGISTRY.get_sample_value("huddle_rate_limit_store_errors_total") or 0.0


class Clock:
    """Milliseconds that move only when a test says so (outage probe timing)."""

    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


class TcpProxy:
    """A TCP relay to Redis that a test can stop and start again: a Redis outage on demand."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pair = {writer}
        self._writers |= pair
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            pair.add(up_writer)
            self._writers |= pair
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            for each in pair:
                each.close()
            self._writers -= pair
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def make_store(redis_prefix: str) -> AsyncIterator[StoreFactory]:
    """Builds stores, each with its own connection pool; closes them after the test."""
    made: list[RedisBucketStore] = []

    def make(url: str, **options: Any) -> RedisBucketStore:
        options.setdefault("prefix", redis_prefix)
        store = RedisBucketStore.from_url(url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def test_two_instances_share_one_bucket_exactly(
    redis_url: str, make_store: StoreFactory, unique: str
) -> None:
    first, second = make_store(redis_url), make_store(redis_url)
    key = f"shared:{unique}"
    remaining = []
    for index in range(10):
        store = first if index % 2 == 0 else second
        decision = await store.take(key, 10, 60_000)
        assert decision.allowed
        remaining.append(decision.remaining)
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]

    for store in (first, second):
        refused = await store.take(key, 10, 60_000)
        assert not refused.allowed
        assert 0 < refused.retry_after_ms <= 60_000


async def test_concurrent_takes_from_two_instances_never_over_grant(
    redis_url: str, make_store: StoreFactory, unique: str
) -> None:
    first, second = make_store(redis_url), make_store(redis_url)
    key = f"race:{unique}"
    decisions = await asyncio.gather(
        *(store.take(key, 10, 60_000) for _ in range(50) for store in (first, second))
    )
    assert sum(decision.allowed for decision in decisions) == 10


async def test_refill_is_the_same_for_every_instance(
    redis_url: str, make_store: StoreFactory, unique: str
) -> None:
    first, second = make_store(redis_url), make_store(redis_url)
    key = f"refill:{unique}"
    assert (await first.take(key, 2, 500, now_ms=10_000)).allowed
    assert (await first.take(key, 2, 500, now_ms=10_000)).allowed
    refused = await second.take(key, 2, 500, now_ms=10_200)
    assert (refused.allowed, refused.retry_after_ms) == (False, 300)
    assert (await second.take(key, 2, 500, now_ms=10_500)).allowed
    assert not (await first.take(key, 2, 500, now_ms=10_500)).allowed


async def test_keys_live_under_the_prefix_and_expire_after_the_window(
    redis_url: str, redis_prefix: str, make_store: StoreFactory, unique: str
) -> None:
    store = make_store(redis_url, window_ms=60_000)
    await store.take(f"ttl:{unique}", 10, 2000)
    await store.take(f"slow:{unique}", 10, 90_000)
    client = aioredis.Redis.from_url(redis_url)
    try:
        ttl = await client.pttl(f"{redis_prefix}:rl:ttl:{unique}")
        slow = await client.pttl(f"{redis_prefix}:rl:slow:{unique}")
    finally:
        await client.aclose()
    assert 55_000 < ttl <= 60_000
    # A bucket slower to refill than the window lives until it is full again.
    assert 895_000 < slow <= 900_000


async def test_peek_consumes_nothing_in_redis(
    redis_url: str, make_store: StoreFactory, unique: str
) -> None:
    store = make_store(redis_url)
    key = f"peek:{unique}"
    for _ in range(5):
        assert (await store.peek(key, 1, 60_000)).allowed
    assert (await store.take(key, 1, 60_000)).allowed
    assert not (await store.peek(key, 1, 60_000)).allowed


async def test_unreachable_redis_falls_back_to_memory_and_counts_the_error(
    make_store: StoreFactory, unique: str
) -> None:
    clock = Clock()
    store = make_store("redis://127.0.0.1:1/0", clock=clock, probe_ms=1000)
    before = store_errors()
    with capture_logs() as logs:
        answers = [await store.take(f"down:{unique}", 3, 60_000) for _ in range(4)]
    assert [answer.allowed for answer in answers] == [True, True, True, False]
    assert store.degraded
    # One failed call; the next ones within the probe interval did not retry Redis.
    assert store_errors() == before + 1
    assert [entry["event"] for entry in logs] == ["ratelimit_store_unavailable"]
    assert logs[0]["error"] == "ConnectionError"
    assert "127.0.0.1:1" not in str(logs)

    clock.ms += 1000
    assert not (await store.take(f"down:{unique}", 3, 60_000)).allowed
    assert store_errors() == before + 2


async def test_the_store_returns_to_redis_by_itself_after_an_outage(
    redis_url: str, make_store: StoreFactory, unique: str
) -> None:
    target = redis_url.removeprefix("redis://").split("/")[0].split(":")
    proxy = TcpProxy(target[0], int(target[1]) if len(target) > 1 else 6379)
    await proxy.start()
    clock = Clock()
    store = make_store(proxy.url, clock=clock, probe_ms=1000)
    observer = make_store(redis_url)
    key = f"outage:{unique}"
    try:
        assert (await store.take(key, 5, 60_000)).allowed
        assert not store.degraded

        await proxy.stop()
        with capture_logs() as logs:
            during = await store.take(key, 5, 60_000)
        assert during.allowed
        assert store.degraded
        assert [entry["event"] for entry in logs] == ["ratelimit_store_unavailable"]

        await proxy.start()
        clock.ms += 1000
        with capture_logs() as logs:
            after = await store.take(key, 5, 60_000)
        assert [entry["event"] for entry in logs] == ["ratelimit_store_recovered"]
        assert not store.degraded
        # Back on the shared bucket: the take made during the outage stayed local.
        assert after.remaining == 3
        assert (await observer.peek(key, 5, 60_000)).remaining == 2
    finally:
        with contextlib.suppress(Exception):
            await proxy.stop()
