"""Engine.IO sessions before their Socket.IO CONNECT: bounded in number and in time.

A client opens an Engine.IO session (the HTTP or WebSocket handshake) and then
sends the Socket.IO CONNECT that starts everything of SPEC §4.1. Until it
does, nothing about it is charged or timed, so a client could hold sessions
(and file descriptors) open for ever. Here:

- each pending session closes after AUTH_TIMEOUT unless its CONNECT arrived
  (SPEC §4.3), and one that times out is charged to its client IP's
  connection bucket like any attempt (SPEC §5);
- a client IP may hold at most its connection burst
  (`MAX_CONNECTIONS_PER_IP`, localhost `MAX_CONNECTIONS_LOCALHOST`) of such
  sessions at once; a session beyond that is refused at once (HTTP 401 from
  engine.io). The connection bucket itself is charged when the CONNECT
  arrives, as before, so an attempt with an expired token still goes to its
  own bucket and never to the normal one.

The count is per process: it guards this process's sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from huddle.config import Settings
from huddle.logging import get_logger
from huddle.metrics import CONNECTION_OUTCOMES
from huddle.security.client_ip import ClientAddress
from huddle.security.ratelimit import ConnectionLimiter

log = get_logger("huddle.gateway.admission")

Closer = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    address: ClientAddress
    timer: asyncio.TimerHandle


class PendingSessions:
    """Engine.IO sessions that have not sent their Socket.IO CONNECT yet."""

    def __init__(self, settings: Settings, limiter: ConnectionLimiter, close: Closer) -> None:
        self._settings = settings
        self._limiter = limiter
        self._close = close
        self._pending: dict[str, _Pending] = {}
        self._per_ip: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def opened(self, eio_sid: str, address: ClientAddress) -> bool:
        """A new Engine.IO session; False when its client IP holds too many already."""
        s = self._settings
        cap = s.max_connections_localhost if address.localhost else s.max_connections_per_ip
        held = self._per_ip.get(address.ip, 0)
        if s.rate_limit_enabled and held >= cap:
            CONNECTION_OUTCOMES["too_many_pending"].inc()
            log.debug("engine_session_refused", client_ip=address.ip, pending=held)
            return False
        loop = asyncio.get_running_loop()
        timer = loop.call_later(s.auth_timeout, self._expired, eio_sid)
        self._pending[eio_sid] = _Pending(address, timer)
        self._per_ip[address.ip] = held + 1
        return True

    def connected(self, eio_sid: str) -> None:
        """Its Socket.IO CONNECT arrived: no longer pending."""
        self._release(eio_sid)

    def closed(self, eio_sid: str) -> None:
        """The Engine.IO session ended."""
        self._release(eio_sid)

    def _release(self, eio_sid: str) -> _Pending | None:
        entry = self._pending.pop(eio_sid, None)
        if entry is None:
            return None
        entry.timer.cancel()
        ip = entry.address.ip
        left = self._per_ip.get(ip, 1) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)
        return entry

    def _expired(self, eio_sid: str) -> None:
        entry = self._release(eio_sid)
        if entry is None:
            return
        task = asyncio.get_running_loop().create_task(self._time_out(eio_sid, entry.address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _time_out(self, eio_sid: str, address: ClientAddress) -> None:
        CONNECTION_OUTCOMES["connect_timeout"].inc()
        log.debug("engine_session_timed_out", client_ip=address.ip)
        try:
            await self._limiter.check(address.ip, expired=False, localhost=address.localhost)
        except Exception as exc:  # the limiter must never keep a session open
            log.warning("connection_limiter_failed", error=type(exc).__name__)
        await self._close(eio_sid)

    async def stop(self) -> None:
        for entry in self._pending.values():
            entry.timer.cancel()
        self._pending.clear()
        self._per_ip.clear()
        for task in list(self._tasks):
            task.cancel()
