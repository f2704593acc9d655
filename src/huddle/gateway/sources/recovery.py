"""Whether the gateway's data backend answers, and who to tell when it answers again.

A source reports every call's outcome (`succeeded`, `failed`). After a
failure a background probe checks the backend every `interval` seconds (or
when the circuit breaker next admits a trial, if later), so recovery is
noticed even when no client is connecting. On the first success after a
failure — a probe's or a real call's — every `on_recovered` callback runs once,
as its own task: that is where the gateway re-fetches the data of its degraded
sockets and sends them `data_refreshed`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from huddle.gateway.sources.base import RecoveredCallback
from huddle.logging import get_logger

log = get_logger("huddle.gateway.sources.recovery")

Probe = Callable[[], Awaitable[None]]


class RecoveryWatch:
    def __init__(
        self,
        probe: Probe,
        *,
        interval: float = 2.0,
        not_before: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """`probe` raises when the backend is still down; `not_before()` is how many
        seconds the next probe must wait at least (the breaker's `retry_in`)."""
        self._probe = probe
        self._interval = interval
        self._not_before = not_before
        self._callbacks: list[RecoveredCallback] = []
        self._healthy = True
        self._down = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def healthy(self) -> bool:
        """False from a failed call until the next successful one."""
        return self._healthy

    def on_recovered(self, callback: RecoveredCallback) -> None:
        self._callbacks.append(callback)

    def succeeded(self) -> None:
        if self._healthy:
            return
        self._healthy = True
        self._down.clear()
        log.info("backend_recovered")
        for callback in self._callbacks:
            task = asyncio.get_running_loop().create_task(self._run(callback))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def failed(self, op: str, reason: str) -> None:
        if self._healthy:
            # Once per outage: a dead backend must not flood the log.
            log.warning("backend_unavailable", op=op, reason=reason)
        else:
            log.debug("backend_call_failed", op=op, reason=reason)
        self._healthy = False
        self._down.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="huddle-backend-recovery")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await self._down.wait()
            await asyncio.sleep(max(self._interval, self._not_before()))
            if self._healthy:
                continue
            try:
                await self._probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The source has already counted the failure; the loop just waits again.
                log.debug("backend_probe_failed", error=type(exc).__name__)

    async def _run(self, callback: RecoveredCallback) -> None:
        try:
            await callback()
        except Exception:
            log.exception("backend_recovered_callback_failed")
