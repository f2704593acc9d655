"""Faults a test can cause on real services, and a record of what clients saw meanwhile.

- `TcpProxy`: a TCP proxy (asyncio, on a thread of its own so that it outlives
  any one test's event loop) in front of a real server — PostgreSQL here. `cut()`
  makes the server unreachable: the listener closes (new connections are
  refused) and every relayed connection is reset, pooled ones included.
  `restore()` listens again on the same port. Hand-written because no library
  here offers a proxy a test can cut; it is a few lines of asyncio.
- `RedisProcess`: a `redis-server` of the test's own on a free port, without
  persistence, that the test stops and starts again (the shared Redis on 6379
  is never touched). Restarted, it is empty, as after a crash.
- `Timeline`: what clients saw, with times relative to the fault, summed up as
  the figures of docs/operations.md "Fault matrix".

`OUTAGE` is how long each fault lasts: `HUDDLE_FAULT_OUTAGE` seconds, 3 by
default so that `make test` stays quick; the figures in the docs come from a
run with 10. With `HUDDLE_FAULT_REPORT=<file>` each test appends its summary
there as one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.gateway.live import free_port

OUTAGE = float(os.environ.get("HUDDLE_FAULT_OUTAGE", "3"))
REPORT = os.environ.get("HUDDLE_FAULT_REPORT")


class TcpProxy:
    """127.0.0.1:<port> relayed to 127.0.0.1:<target>; `cut()` and `restore()` it."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropping = False

    def start(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def restore(self) -> None:
        self._call(self._restore())

    def cut(self, *, drop: bool = False) -> None:
        """Refuse and reset connections; or, with `drop`, keep them open but silent
        (every byte either way is discarded, as when packets are dropped)."""
        self._call(self._drop() if drop else self._cut())

    def close(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: Awaitable[None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _restore(self) -> None:
        if self._dropping:
            await self._cut()  # what was held silent is reset, as a TCP timeout would
        await self._listen()

    async def _drop(self) -> None:
        self._dropping = True
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._relay, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        self._dropping = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            # SO_LINGER 0: the peer gets a reset, as when a host or a link goes away.
            with contextlib.suppress(OSError):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0.01)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._dropping:
            self._writers.add(writer)
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not self._dropping:
                        dst.write(data)
                        await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            self._writers.difference_update((writer, up_writer))


class RedisProcess:
    """`redis-server` on a free port, no persistence; `stop()` and `start()` again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("redis-server")
        if found is None:
            message = "redis-server is not installed"
            if REQUIRE_SERVICES:
                pytest.fail(f"{message} (HUDDLE_REQUIRE_SERVICES=1)", pytrace=False)
            pytest.skip(message)
        return found

    def start(self) -> RedisProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [self.binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.data_dir)]
        with (self.data_dir / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@dataclass
class Timeline:
    """Observations with times in seconds from the fault (`fault_at`); `restored_at` too."""

    name: str
    fault_at: float = 0.0
    restored_at: float | None = None
    seen: list[tuple[str, float, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def fault(self) -> None:
        self.fault_at = time.monotonic()

    def restored(self) -> None:
        self.restored_at = self.since_fault()

    def since_fault(self) -> float:
        return round(time.monotonic() - self.fault_at, 3) if self.fault_at else 0.0

    def note(self, what: str, value: Any = None) -> None:
        self.seen.append((what, self.since_fault(), value))

    def times(self, what: str) -> list[tuple[float, Any]]:
        return [(at, value) for name, at, value in self.seen if name == what]

    def report(self, **figures: Any) -> dict[str, Any]:
        """Record the figures (printed, and appended to HUDDLE_FAULT_REPORT)."""
        self.figures.update(figures)
        line = {"fault": self.name, "outage_s": OUTAGE, **self.figures}
        print(json.dumps(line))
        if REPORT:
            with open(REPORT, "a") as out:
                out.write(json.dumps(line) + "\n")
        return line


async def poll_readyz(
    timeline: Timeline, label: str, url: str, stop: asyncio.Event, every: float = 0.2
) -> None:
    """Asks `url`/readyz until `stop`, noting `label` with the parts named down ([] when ready)."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            try:
                response = await client.get("/readyz")
                body = response.json()
                down = body["error"]["details"]["down"] if response.status_code == 503 else []
            except httpx.HTTPError as exc:
                down = [f"unreachable: {type(exc).__name__}"]
            timeline.note(label, down)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


def spans(timeline: Timeline, label: str, part: str) -> dict[str, float | None]:
    """When `/readyz` (noted as `label`) first named `part` after the fault, and when it was
    ready again after the restore (seconds from the fault and from the restore)."""
    named = [at for at, down in timeline.times(label) if part in down and at >= 0]
    restored = timeline.restored_at or 0.0
    ready = [at for at, down in timeline.times(label) if not down and at > restored]
    return {
        "named_after_s": round(named[0], 2) if named else None,
        "ready_after_restore_s": round(ready[0] - restored, 2) if ready else None,
    }


async def until(check: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(every)
