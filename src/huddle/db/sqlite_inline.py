"""An aiosqlite-compatible shim that runs SQLite statements inline on the event loop.

Why this exists: aiosqlite runs each connection in its own thread and hands
every call (execute, fetch, commit, rollback, close) across a queue and back
through `call_soon_threadsafe`. Measured here, `SELECT 1` through SQLAlchemy
and aiosqlite cost ~500 µs of CPU, against ~55 µs for one `to_thread` hop and
~4 µs inline. Huddle's SQLite statements are small and local (WAL mode, no
network), so a thread per call costs far more than the statement it carries.
No library offers an inline asyncio SQLite driver for SQLAlchemy, so this
module gives SQLAlchemy's own aiosqlite dialect an object with aiosqlite's
surface whose coroutines finish without suspending.

Consequences, and why they are acceptable:
- A statement blocks the event loop while it runs (micro- to milliseconds for
  this schema). Large deployments use PostgreSQL, whose driver is truly async.
- A unit of work never yields between its statements, so two units in one
  process never interleave and never contend for SQLite's write lock. Another
  process holding the lock (a CLI command) makes a writer wait up to
  `busy_timeout`, with the loop blocked; `huddle serve` on SQLite is a
  single-process deployment.

Select it with `DATABASE_URL=sqlite+aiosqlite:///…` (the default); set
`SQLITE_DRIVER=thread` to use aiosqlite's threads instead.
"""

from __future__ import annotations

import sqlite3
import types
from collections.abc import Generator, Iterable, Sequence
from typing import Any


class _Thread:
    """SQLAlchemy marks aiosqlite's thread as a daemon; there is none here."""

    daemon = True


class _ImmediateQueue:
    """Stands in for aiosqlite's request queue: runs the request at once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def put_nowait(self, item: tuple[Any, Any]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # handed back to the awaiting caller
            future.set_exception(exc)


class Cursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class Connection:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._tx = _ImmediateQueue(conn)
        self._thread = _Thread()

    def cursor(self) -> Cursor:
        if self._connection is None:
            raise ValueError("Connection closed")
        return Cursor(self._conn.cursor())

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


class _Opening:
    """What `connect` returns: awaitable, with the `_thread` SQLAlchemy touches first."""

    _thread = _Thread()

    def __init__(self, database: str, kwargs: dict[str, Any]) -> None:
        self._database = database
        self._kwargs = kwargs

    def __await__(self) -> Generator[Any, None, Connection]:
        kwargs = dict(self._kwargs)
        kwargs.pop("loop", None)
        kwargs.pop("iter_chunk_size", None)
        kwargs["check_same_thread"] = False  # opened and used on the loop's thread only
        return Connection(sqlite3.connect(self._database, **kwargs))
        yield  # unreachable: makes this a generator that finishes without suspending


def connect(database: str, **kwargs: Any) -> _Opening:
    """Like `aiosqlite.connect`: an awaitable connection."""
    return _Opening(database, kwargs)


def module() -> types.ModuleType:
    """A module object with aiosqlite's names, for SQLAlchemy's aiosqlite dialect."""
    shim = types.ModuleType("huddle_sqlite_inline")
    shim.connect = connect  # type: ignore[attr-defined]
    shim.Connection = Connection  # type: ignore[attr-defined]
    for name in (
        "DatabaseError",
        "Error",
        "IntegrityError",
        "NotSupportedError",
        "OperationalError",
        "ProgrammingError",
        "sqlite_version",
        "sqlite_version_info",
    ):
        setattr(shim, name, getattr(sqlite3, name))
    return shim


def dbapi() -> Any:
    """The DBAPI object to pass as `module=` to `create_async_engine`."""
    from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

    return AsyncAdapt_aiosqlite_dbapi(module(), sqlite3)
