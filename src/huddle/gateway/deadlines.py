"""Every socket's token deadline on one loop timer: `Deadlines`.

An authenticated socket holds one deadline for its token's whole life (the
`token_expiring` warning, then the expiry). As a `loop.call_later` per socket
that cost ~1.3 KB for hours: the two closures and their cells, the handle, the
libuv timer, a copied context and the session's timer dictionary (census in
docs/benchmarks.md, "Memory per idle connection"). Here a socket costs a place
in a set: deadlines are kept in buckets of `TICK` seconds and one loop timer
fires the earliest bucket.

Written here rather than taken from a library: asyncio has no timer wheel, and
the ones on PyPI run their own threads or tasks per timer.

A deadline never fires early; it fires at most `TICK` late (plus the loop's
own delay). `set` replaces a socket's deadline, `discard` drops it.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from huddle.logging import get_logger

if TYPE_CHECKING:
    from huddle.gateway.session import SocketSession

log = get_logger("huddle.gateway")

TICK = 0.25
"""Seconds per bucket: how late at most a deadline fires."""


class Deadlines:
    """Sockets' deadlines (wall-clock times), each fired once through `fire(session)`."""

    __slots__ = ("_armed_tick", "_buckets", "_fire", "_handle", "_loop", "_ticks")

    def __init__(self, fire: Callable[[SocketSession], None]) -> None:
        self._fire = fire
        self._buckets: dict[int, set[SocketSession]] = {}
        self._ticks: list[int] = []  # a heap of the buckets' ticks
        self._handle: asyncio.TimerHandle | None = None
        self._armed_tick = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def set(self, session: SocketSession, when: float) -> None:
        """Fire `session` at wall-clock time `when` (replacing its deadline)."""
        self.discard(session)
        loop = self._loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, when - time.time())
        tick = math.ceil(due / TICK)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            heapq.heappush(self._ticks, tick)
        bucket.add(session)
        session.deadline_tick = tick
        if self._handle is None or tick < self._armed_tick:
            self._arm(tick)

    def discard(self, session: SocketSession) -> None:
        """Drop `session`'s deadline, if it has one (an empty bucket is dropped when due)."""
        tick = session.deadline_tick
        if tick:
            session.deadline_tick = 0
            bucket = self._buckets.get(tick)
            if bucket is not None:
                bucket.discard(session)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for bucket in self._buckets.values():
            for session in bucket:
                session.deadline_tick = 0
        self._buckets.clear()
        self._ticks.clear()

    def _arm(self, tick: int) -> None:
        assert self._loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._armed_tick = tick
        self._handle = self._loop.call_at(tick * TICK, self._due)

    def _due(self) -> None:
        self._handle = None
        assert self._loop is not None
        now = self._loop.time()
        ticks = self._ticks
        while ticks and ticks[0] * TICK <= now:
            tick = heapq.heappop(ticks)
            for session in self._buckets.pop(tick, ()):
                session.deadline_tick = 0
                try:
                    self._fire(session)  # may `set` a later deadline for it
                except Exception:
                    log.exception("deadline_failed", sid=session.sid)
        if ticks:
            self._arm(ticks[0])
