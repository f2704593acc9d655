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

SQLAlchemy's sync layer reaches the driver through an adapted connection that
turns every DBAPI call into `await_` on a coroutine: a greenlet switch out to
the event loop and back, ~13 k instructions each, eight per outbox event
(cursor open, execute and close for two statements, commit, the pool's
reset). Since these coroutines never suspend, `dbapi()` adapts the connection
with sqlite3 called directly instead; only `execute` keeps its `await_` (see
`_Cursor.execute`).

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

import collections
import sqlite3
import types
from collections.abc import Generator, Iterable, Sequence
from typing import Any, cast

from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_


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

    def open(self) -> Connection:
        kwargs = dict(self._kwargs)
        kwargs.pop("loop", None)
        kwargs.pop("iter_chunk_size", None)
        kwargs["check_same_thread"] = False  # opened and used on the loop's thread only
        return Connection(sqlite3.connect(self._database, **kwargs))

    def __await__(self) -> Generator[Any, None, Connection]:
        return self.open()
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


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor adaptation, on the sqlite3 cursor directly."""

    __slots__ = ()

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # The base class opens the driver cursor with `await_(cursor.__aenter__())`.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        conn = cast(Connection, self._connection)._connection
        if conn is None:
            # aiosqlite's message, which the dialect maps to a disconnect
            adapt_connection._handle_exception(ValueError("Connection closed"))
        self._cursor = cast(Any, conn.cursor())
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        # Still one `await_`: `AsyncConnection.execute` (`/readyz`, scripts) refuses
        # a driver that never switches greenlets (AwaitRequired). It costs ~2 % of
        # an outbox event; no other call needs it.
        try:
            return await_(self._execute(operation, parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _execute(self, operation: Any, parameters: Any) -> Any:
        # No execute mutex: nothing here suspends, so nothing interleaves.
        cursor: Any = self._cursor
        if parameters is None:
            result = cursor.execute(operation)
        else:
            result = cursor.execute(operation, parameters)
        if cursor.description:
            self._rows = collections.deque(cursor.fetchall())
        return result

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        # One `await_` too, for the same reason as `execute` (`AsyncConnection.execute`
        # of a multi-row insert, e.g. bench/seed.py).
        try:
            return await_(self._executemany(operation, seq_of_parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        return self._cursor.executemany(operation, seq_of_parameters)

    def close(self) -> None:
        self._rows.clear()
        if not self._soft_closed_memoized:
            cast(sqlite3.Cursor, self._cursor).close()

    async def _async_soft_close(self) -> None:
        self._soft_closed_memoized = self._soft_closed_memoized.union(
            {"description": self._cursor.description}
        )
        cast(sqlite3.Cursor, self._cursor).close()


class _AdaptedConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection adaptation, on the sqlite3 connection directly."""

    __slots__ = ()

    _cursor_cls = _Cursor

    @property
    def _sqlite(self) -> sqlite3.Connection | None:
        return cast(Connection, self._connection)._connection

    def commit(self) -> None:
        conn = self._sqlite
        if conn is not None:
            try:
                conn.commit()
            except Exception as error:
                self._handle_exception(error)

    def rollback(self) -> None:
        conn = self._sqlite
        if conn is not None:
            try:
                conn.rollback()
            except Exception as error:
                self._handle_exception(error)

    def close(self) -> None:
        cast(Connection, self._connection).stop()

    def create_function(self, *args: Any, **kw: Any) -> None:
        try:
            cast(Connection, self._connection)._conn.create_function(*args, **kw)
        except Exception as error:
            self._handle_exception(error)


class _Dbapi(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite DBAPI module, connecting without a greenlet switch."""

    def connect(self, *arg: Any, **kw: Any) -> Any:
        if "async_creator_fn" in kw:
            return super().connect(*arg, **kw)
        opening: _Opening = self.aiosqlite.connect(*arg, **kw)
        return _AdaptedConnection(self, cast(Any, opening.open()))


def dbapi() -> Any:
    """The DBAPI object to pass as `module=` to `create_async_engine`."""
    return _Dbapi(module(), sqlite3)
