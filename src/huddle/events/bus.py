"""Publish/subscribe for committed events: in-process, or Redis for many instances.

Publishers hand over events after their transaction commits. Subscribers get
log events strictly in id order: ids are gapless (see `outbox`), so a
`Sequencer` holds an early arrival until the ones before it come, and after
`gap_timeout` asks `fill_gap` (the event log, where the process has a
database) or skips ahead, so one lost message never stalls delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from huddle.events.envelope import Envelope
from huddle.logging import get_logger
from huddle.metrics import BUS_ERRORS, EVENT_GAPS

log = get_logger("huddle.bus")

Handler = Callable[[Envelope], Awaitable[None]]
GapFiller = Callable[[int, int], Awaitable[list[Envelope]]]

STREAM_MAXLEN = 100_000
"""Entries the Redis stream keeps (approximately); older ones are trimmed."""
STREAM_HEAD_PAGE, STREAM_HEAD_PAGES = 500, 20
"""How far back `RedisBus` looks for the newest logged event at start: 10,000 entries."""


def stream_key(prefix: str) -> str:
    """The Redis stream of `RedisBus`.

    Each entry is `{e: <Envelope JSON>, o: <writer id>}`. Besides the buses,
    the Redis presence store appends `presence_changed` control messages to it
    from its scripts (`huddle.gateway.realtime.presence.redis_store`).
    """
    return f"{prefix}:events"


class EventBus(Protocol):
    """Where committed events go, and where the gateway hears them."""

    async def publish(self, events: Sequence[Envelope]) -> None: ...

    def subscribe(self, handler: Handler) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def head(self) -> int | None:
        """The newest event id this bus has delivered or knows of (None: none yet)."""
        ...


class Sequencer:
    """Delivers log events in id order, exactly once each, to the handlers."""

    def __init__(
        self,
        handlers: list[Handler],
        *,
        last_id: int | None = None,
        gap_timeout: float = 2.0,
        fill_gap: GapFiller | None = None,
    ) -> None:
        self._handlers = handlers
        self.last_id = last_id
        self._pending: dict[int, Envelope] = {}
        self._gap_timeout = gap_timeout
        self._fill_gap = fill_gap
        self._gap_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def push(self, event: Envelope) -> None:
        async with self._lock:
            if event.id is None:
                await self._deliver(event)
                return
            if self.last_id is None:
                self.last_id = event.id - 1
            if event.id <= self.last_id:
                return  # a duplicate (two relays, a redelivery)
            self._pending[event.id] = event
            await self._drain()

    async def _drain(self) -> None:
        assert self.last_id is not None
        while (nxt := self._pending.pop(self.last_id + 1, None)) is not None:
            self.last_id = nxt.id if nxt.id is not None else self.last_id
            await self._deliver(nxt)
        if self._pending and self._gap_task is None:
            self._gap_task = asyncio.create_task(self._close_gap())

    async def _close_gap(self) -> None:
        try:
            await asyncio.sleep(self._gap_timeout)
            async with self._lock:
                if not self._pending or self.last_id is None:
                    return
                first = min(self._pending)
                EVENT_GAPS.inc()
                missing: list[Envelope] = []
                if self._fill_gap is not None:
                    with contextlib.suppress(Exception):
                        missing = await self._fill_gap(self.last_id, first)
                for event in missing:
                    if event.id is not None and event.id > self.last_id:
                        self._pending.setdefault(event.id, event)
                if self.last_id + 1 not in self._pending:
                    log.warning("event_gap_skipped", after=self.last_id, resumed_at=first)
                    self.last_id = first - 1
                self._gap_task = None
                await self._drain()
        finally:
            self._gap_task = None

    async def _deliver(self, event: Envelope) -> None:
        for handler in self._handlers:
            try:
                await handler(event)
            except Exception:
                log.exception("event_handler_failed", event_type=event.type, event_id=event.id)

    async def close(self) -> None:
        if self._gap_task is not None:
            self._gap_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gap_task


class InProcessBus:
    """The embedded bus of `huddle serve`: publish calls the subscribers in id order."""

    def __init__(self, *, last_id: int | None = None, fill_gap: GapFiller | None = None) -> None:
        self._handlers: list[Handler] = []
        self._sequencer = Sequencer(self._handlers, last_id=last_id, fill_gap=fill_gap)

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def publish(self, events: Sequence[Envelope]) -> None:
        for event in events:
            await self._sequencer.push(event)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._sequencer.close()

    @property
    def healthy(self) -> bool:
        return True

    @property
    def head(self) -> int | None:
        return self._sequencer.last_id


class RedisBus:
    """Events through a Redis stream, so every instance hears every event.

    A stream rather than pub/sub: a subscriber that loses its connection
    resumes from the last entry it read, so a Redis blip loses nothing.

    Publishing never waits for Redis: events go to this process's own
    subscribers at once (so local clients keep working while Redis is down)
    and into a bounded backlog that a flusher task appends to the stream, in
    order, retrying until Redis answers. The listener skips entries this
    process wrote itself.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "huddle",
        maxlen: int = STREAM_MAXLEN,
        backlog: int = 100_000,
        last_id: int | None = None,
        fill_gap: GapFiller | None = None,
    ) -> None:
        self._stream = stream_key(prefix)
        self._maxlen = maxlen
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=15
        )
        self._origin = uuid.uuid4().hex
        self._handlers: list[Handler] = []
        self._sequencer = Sequencer(self._handlers, last_id=last_id, fill_gap=fill_gap)
        self._pending: deque[Envelope] = deque(maxlen=backlog)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._healthy = False
        self._publishing_ok = True

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    @property
    def healthy(self) -> bool:
        return self._healthy and self._publishing_ok

    @property
    def head(self) -> int | None:
        return self._sequencer.last_id

    async def publish(self, events: Sequence[Envelope]) -> None:
        for event in events:
            if len(self._pending) == self._pending.maxlen:
                BUS_ERRORS.labels(op="backlog_full").inc()  # the oldest is dropped
            self._pending.append(event)
        self._wake.set()
        for event in events:
            await self._sequencer.push(event)

    async def start(self) -> None:
        if self._sequencer.last_id is None:
            # No database told us where the log stands (`huddle gateway`): the stream does.
            self._sequencer.last_id = await self._stream_head()
        self._tasks = [
            asyncio.create_task(self._listen(), name="huddle-bus-listen"),
            asyncio.create_task(self._flush(), name="huddle-bus-flush"),
        ]

    async def stop(self) -> None:
        if self._pending:
            # One last chance for what is queued, bounded so shutdown never hangs.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._send(list(self._pending))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._sequencer.close()
        await self._redis.aclose()

    async def _stream_head(self) -> int | None:
        """The newest logged event id on the stream (control messages have none), looking
        back at most `STREAM_HEAD_PAGES` pages; None when Redis cannot say."""
        newest = "+"
        try:
            for _page in range(STREAM_HEAD_PAGES):
                entries: Any = await self._redis.xrevrange(
                    self._stream, max=newest, count=STREAM_HEAD_PAGE
                )
                for entry_id, fields in entries or []:
                    raw = fields.get(b"e") or fields.get("e")
                    event_id = Envelope.from_json(raw).id if raw is not None else None
                    if event_id is not None:
                        return event_id
                    newest = "(" + _text(entry_id)
                if len(entries or []) < STREAM_HEAD_PAGE:
                    break
        except (RedisError, OSError, ValueError, KeyError) as exc:
            log.warning("event_stream_head_unavailable", error=type(exc).__name__)
        return None

    async def _send(self, batch: list[Envelope]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for event in batch:
                pipe.xadd(
                    self._stream,
                    {"e": event.to_json(), "o": self._origin},
                    maxlen=self._maxlen,
                    approximate=True,
                )
            await pipe.execute()

    async def _flush(self) -> None:
        delay = 0.1
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            batch = list(self._pending)[:500]
            try:
                await self._send(batch)
            except (RedisError, OSError) as exc:
                BUS_ERRORS.labels(op="publish").inc()
                if self._publishing_ok:
                    log.warning(
                        "bus_publish_failed", error=type(exc).__name__, backlog=len(self._pending)
                    )
                self._publishing_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            for _ in batch:
                self._pending.popleft()
            if not self._publishing_ok:
                log.info("bus_publish_resumed")
            self._publishing_ok = True
            delay = 0.1

    async def _listen(self) -> None:
        cursor = "$"
        delay = 0.1
        while True:
            try:
                if cursor == "$":
                    # Resolve "$" once so a reconnect resumes exactly where we were.
                    info = await self._redis.xinfo_stream(self._stream)
                    cursor = _text(info["last-generated-id"])
                if not self._healthy:
                    # Redis answers again (the read below may block for seconds before
                    # it proves anything): only then healthy, so that an outage logs
                    # one warning and backs off instead of one line per retry.
                    await self._redis.ping()
                    log.info("bus_redis_connected")
                    self._healthy = True
                    delay = 0.1
                reply: Any = await self._redis.xread({self._stream: cursor}, block=5000, count=500)
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        cursor = _text(entry_id)
                        await self._receive(cursor, fields)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if "no such key" in str(exc).lower():
                    # The stream does not exist yet: read it from its start once it does.
                    cursor = "0-0"
                    await asyncio.sleep(0.2)
                    continue
                if self._healthy:
                    log.warning("bus_redis_unavailable", error=type(exc).__name__)
                BUS_ERRORS.labels(op="listen").inc()
                self._healthy = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _receive(self, entry: str, fields: dict[Any, Any]) -> None:
        origin = fields.get(b"o") or fields.get("o")
        if origin is not None and _text(origin) == self._origin:
            return  # delivered locally when published
        raw = fields.get(b"e") or fields.get("e")
        if raw is None:
            return
        try:
            event = Envelope.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("bus_message_malformed", entry=entry)
            return
        await self._sequencer.push(event)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
