"""`Coalescer`: many concurrent look-ups sent as few batched requests.

A reconnect storm brings hundreds of sockets to `HttpSource.fetch` within
milliseconds; one request per socket would cost the API a REST request each.
The coalescer gathers keys for a short window (`window`, 2 ms by default)
and while `max_in_flight` batches are already on their way, then sends up to
`max_batch` keys in one call of `send`. Each caller awaits its own key's
result: a value, or the exception `send` gave for that key alone; when `send`
itself raises, every key of the batch gets that exception. Equal keys asked
for while one is pending share one entry.

Hand-written because no library here coalesces asyncio calls by key with a
bound on batch size and in-flight batches (aiodataloader batches per loop
tick only, with no such bounds, and is unmaintained).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

Send = Callable[[list[K], float], Awaitable[dict[K, R | BaseException]]]
"""`send(keys, first_asked)`: `first_asked` is the loop time the batch's oldest key was asked
for, so that the request can keep that caller's deadline."""


class Coalescer(Generic[K, R]):
    def __init__(
        self,
        send: Send[K, R],
        *,
        window: float = 0.002,
        max_batch: int = 100,
        max_in_flight: int = 2,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._send = send
        self._window = window
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._on_batch = on_batch
        self._pending: dict[K, asyncio.Future[R]] = {}
        self._asked: dict[K, float] = {}  # loop time each pending key was first asked for
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> R:
        """The result for `key`; raises what `send` gave for it. Cancelling one caller
        leaves the others sharing the key waiting."""
        future = self._pending.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._pending[key] = future
            self._asked[key] = loop.time()
            self._schedule()
        return await asyncio.shield(future)

    def _schedule(self) -> None:
        if len(self._tasks) >= self._max_in_flight or not self._pending:
            return  # a finishing batch schedules the next one
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending and len(self._tasks) < self._max_in_flight:
            keys = list(self._pending)[: self._max_batch]
            batch = {key: self._pending.pop(key) for key in keys}
            first_asked = min(self._asked.pop(key) for key in keys)
            task = asyncio.get_running_loop().create_task(self._run(batch, first_asked))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._pending:  # gathered while the batches were in flight: they waited already
            self._flush()

    async def _run(self, batch: dict[K, asyncio.Future[R]], first_asked: float) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            results = await self._send(list(batch), first_asked)
        except asyncio.CancelledError:
            for future in batch.values():
                future.cancel()
            raise
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: nobody may be waiting any more
            return
        for key, future in batch.items():
            if future.done():
                continue
            result = results.get(key, LookupError(key))
            if isinstance(result, BaseException):
                future.set_exception(result)
                future.exception()
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        """Cancel the batches in flight; keys still gathering are cancelled too."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._asked.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
