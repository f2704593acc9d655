"""WAL checkpoints of the embedded SQLite database, in a thread instead of on the event loop.

SQLite in WAL mode appends each commit's pages to the `-wal` file; a
checkpoint copies them back into the database file and, at
`synchronous=NORMAL`, syncs both files to disk. By default the connection
that commits the transaction crossing 1,000 WAL pages runs that checkpoint
itself, inside its COMMIT. Huddle's SQLite driver runs on the event loop
(`huddle.accel.sqlalchemy`, override 1), so every ~170th write stopped every
socket and request for the checkpoint's two fsyncs: ~5 ms on this machine's
disk, ~15 % of the outbox's cost per event on average (docs/benchmarks.md,
"This session's changes (2026-12-04, third session)"; `bench/outbox_cost.py`).

Here the serving connections checkpoint only as a safety net
(`SAFETY_NET_PAGES`, 40 MB of WAL), and `Checkpointer` runs a PASSIVE
checkpoint every `INTERVAL` seconds when something was committed since its
last pass (the WAL file's size or time changed), on a connection of its own,
in a worker thread: sqlite3 releases the GIL while SQLite copies and syncs, so the loop
goes on serving. A PASSIVE checkpoint never blocks writers or readers; it
copies what no open read transaction still needs, and the next writer starts
the WAL over once everything is copied. SQLite has no API to hand
checkpoints to another thread by itself, hence this small class.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from huddle.logging import get_logger
from huddle.metrics import SQLITE_CHECKPOINT_SECONDS

log = get_logger("huddle.db")

SAFETY_NET_PAGES = 10_000
"""`wal_autocheckpoint` of the serving connections: they checkpoint themselves only if
the WAL reaches this many pages (SQLite's default is 1,000), e.g. when the
checkpointer cannot keep up or is not running (tools, tests without a runtime)."""
INTERVAL = 0.25
"""Seconds between the checkpointer's passes. At ~2,000 writes/s of ~5 pages each,
a pass finds ~2,500 pages: well under `SAFETY_NET_PAGES`."""


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on `path` every `interval` seconds, in a thread."""

    def __init__(self, path: Path, *, interval: float = INTERVAL) -> None:
        self._path = path
        self._interval = interval
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one pass at a time, and none after close
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        """Passes that ran (for tests)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="huddle-sqlite-checkpoint")

    async def stop(self) -> None:
        """Stop the passes, then run a last one, so the database file holds every commit."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(sqlite3.Error, OSError):
            await asyncio.to_thread(self.checkpoint)
        await asyncio.to_thread(self._close)

    def _wal_stamp(self) -> tuple[int, int] | None:
        """The WAL file's size and modification time: a commit appends to it, a
        PASSIVE checkpoint does not. None when there is no WAL file."""
        try:
            stat = os.stat(f"{self._path}-wal")
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    async def _run(self) -> None:
        failing = False
        copied: tuple[int, int] | None = None  # the WAL as of the last pass that succeeded
        while True:
            await asyncio.sleep(self._interval)
            stamp = self._wal_stamp()
            if stamp is None or stamp == copied:
                continue  # nothing committed since: no thread, no SQLite call
            try:
                await asyncio.to_thread(self.checkpoint)
            except (sqlite3.Error, OSError) as exc:
                # The serving connections' safety net still bounds the WAL; say it once.
                if not failing:
                    log.warning("sqlite_checkpoint_failed", error=type(exc).__name__)
                failing = True
                continue
            if failing:
                log.info("sqlite_checkpoint_resumed")
            failing = False
            copied = stamp

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint (blocking: run it in a thread). SQLite's answer:
        (busy, pages in the WAL, pages copied); (0, 0, 0) once closed."""
        with self._lock:
            if self._closed:
                return (0, 0, 0)
            if self._connection is None:
                # Autocommit, usable from whichever worker thread runs the next pass
                # (the lock keeps passes one at a time).
                self._connection = sqlite3.connect(
                    self._path, timeout=5, isolation_level=None, check_same_thread=False
                )
            started = time.perf_counter()
            row = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            SQLITE_CHECKPOINT_SECONDS.observe(time.perf_counter() - started)
            self.passes += 1
            busy, wal_pages, copied = (int(value) for value in row)
            return busy, wal_pages, copied

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None
