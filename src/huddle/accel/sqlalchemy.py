"""SQLAlchemy, on the event loop: SQLite inline, the outbox's statements as driver SQL, reads raw.

Overrides (the public path: SQLAlchemy's aiosqlite dialect over aiosqlite's
thread, and Core statements executed through `Connection.execute`):

1. **SQLite inline** (`dbapi()`, `Connection`, `Cursor`, `_AdaptedConnection`,
   `_Cursor`, `_Dbapi`). aiosqlite runs each connection in a thread and hands
   every call (execute, fetch, commit, rollback, close) across a queue and
   back; for Huddle's small local statements that hop costs far more than the
   statement. This gives SQLAlchemy's own aiosqlite dialect an object with
   aiosqlite's surface whose coroutines finish without suspending, and adapts
   the sqlite3 connection with direct calls instead of an `await_` greenlet
   switch per DBAPI call (only `execute`/`executemany` keep one `await_`,
   because `AsyncConnection.execute` refuses a driver that never switches).
   Consequences: a statement blocks the loop while it runs (micro- to
   milliseconds for this schema), and a unit of work never yields between
   statements, so two units in one process never contend for SQLite's write
   lock; another process holding it makes a writer wait up to `busy_timeout`
   with the loop blocked (a single-process deployment; PostgreSQL is for
   more). No library offers an inline asyncio SQLite driver for SQLAlchemy.
   Private names: `sqlalchemy.dialects.sqlite.aiosqlite.AsyncAdapt_aiosqlite_*`
   (subclassed), `sqlalchemy.connectors.asyncio.AsyncAdapt_dbapi_connection`,
   `sqlalchemy.util.concurrency.await_` (2.1), the adapted objects'
   `_connection`, `_cursor`, `_rows`, `_soft_closed_memoized`,
   `_handle_exception`.
2. **Prepared statements** (`Prepared`, `PreparedOutbox`, `PreparedQueries`). Executing a Core
   statement costs an execution context per call even when the compiled form
   is cached; for the outbox's two statements per event that was more than
   SQLite's own work for the whole transaction. `Prepared` compiles once per
   dialect with SQLAlchemy's compiler, keeps its parameters' bind processors
   (JSON, UTC datetimes) and its selected columns' result processors, and
   runs the SQL with `exec_driver_sql` — or, where
   the dialect adds nothing around a DBAPI execute (SQLite) and the
   connection has no events or echo, on the DBAPI cursor with SQLAlchemy's
   own error handling (`Connection._handle_dbapi_exception`). For plain
   statements whose every bind parameter is given: no defaults, no expanding
   `IN`, no literals. Private names: `Connection._has_events`,
   `Engine._has_events`, `Connection._echo`,
   `Connection._handle_dbapi_exception`, `DefaultExecutionContext` hooks.
3. **A read in one hop** (`PreparedQueries.select`, `transact`). The public way to
   run sync code on a connection of its own takes three hops into
   SQLAlchemy's sync layer, each a new greenlet: `AsyncEngine.connect()`,
   `AsyncConnection.run_sync`, `close()`. This checks out, runs and checks in
   inside one `greenlet_spawn` (with the sync engine's `connect()`, as
   `AsyncConnection.start` does), which is what those three do one by one;
   `transact` does the same with `Engine.begin()`, for the outbox writes of a
   unit of work that has no ORM session.
   Private name: `sqlalchemy.util.concurrency.greenlet_spawn`.
4. **SQLite reads on the sqlite3 connection** (`PreparedQueries._select`,
   `_read_raw`). A read through a `Connection` wraps SQLite's work in a
   Connection, a transaction that issues nothing on SQLite, a rollback on
   close and the inline cursor's greenlet switch. With the inline driver, no
   engine events and no statement logging, the statements run on the sqlite3
   connection of a pooled connection checked out with the public
   `Engine.raw_connection()` (the pool's checkout, checkin and reset kept);
   on any error that connection is invalidated and the read runs again
   through a `Connection`, which reports the error as before. Private names:
   `Engine._has_events`, `Engine._should_log_info`.
5. **One read connection** (`_Reader`, used by `PreparedQueries.select`).
   Override 4 still checked a connection out of the pool for each read, in
   a `greenlet_spawn`, and reset it on checkin. Inline reads never yield, so
   one sqlite3 connection, opened through the pool and `detach`ed from it
   (both public), serves every read of the process with none of that. Any
   error closes it and that read goes through the pool (override 4), which
   reports it. Private names: those of override 4.

Figures: docs/benchmarks.md ("Outbox per event", "REST reads (issue 12)").
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
import types
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from weakref import WeakKeyDictionary

from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import Connection as SAConnection
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.engine.default import DefaultDialect, DefaultExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_, greenlet_spawn

from huddle.accel import Gate, Tested
from huddle.db.queries import Query

GATE = Gate((Tested("SQLAlchemy", "sqlalchemy", ("2.1.9",)),))

T = TypeVar("T")


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


# --- prepared statements (override 2) ---------------------------------------


# What a dialect's execution context may add around a DBAPI execute; where any
# is overridden (asyncpg: its statement-cache invalidation) `Prepared` keeps
# `exec_driver_sql`.
_HOOKS = (
    "create_cursor",
    "create_default_cursor",
    "pre_exec",
    "post_exec",
    "handle_dbapi_exception",
)


@dataclass(frozen=True, slots=True)
class _Form:
    """One dialect's SQL for the statement and how to bind its parameters."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool
    direct: bool  # the dialect adds nothing to a driver-SQL execution: see `_on_cursor`
    results: tuple[tuple[int, Callable[[Any], Any]], ...] | None
    """(index, result processor) of the selected columns that have one (types such as UTC
    datetimes); None: none has."""
    defaults: Mapping[str, Any]
    """Values of the bind parameters the statement itself fixes (SQLite's `OFFSET 0`)."""

    def bind(self, params: Mapping[str, Any] | None) -> tuple[Any, ...] | dict[str, Any] | None:
        """The driver's parameters for `params` (by bind name), bind processors applied."""
        if not self.names:
            return None
        if params is None:
            raise TypeError("this statement takes parameters")
        given = {**self.defaults, **params} if self.defaults else params
        values = [
            given[name] if process is None else process(given[name])
            for name, process in zip(self.names, self.processors, strict=True)
        ]
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))

    def convert(self, rows: list[Any]) -> list[Any]:
        """The driver's rows with the result processors applied (as tuples)."""
        results = self.results
        if results is None or not rows:
            return rows
        converted = []
        for row in rows:
            values = list(row)
            for index, process in results:
                values[index] = process(values[index])
            converted.append(tuple(values))
        return converted


class Prepared:
    """A Core statement executed as its compiled driver SQL."""

    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        self._forms: WeakKeyDictionary[Dialect, _Form] = WeakKeyDictionary()

    def execute(
        self, connection: SAConnection, params: Mapping[str, Any] | None = None
    ) -> list[Any]:
        """Run on `connection`, in its transaction; `params` by bind name (column key).

        Returns the statement's rows (empty without RETURNING). Errors surface
        as `Connection.execute` raises them: SQLAlchemy's DBAPIError classes,
        a lost connection invalidated.
        """
        form = self.form(connection.dialect)
        parameters = form.bind(params)
        if (
            not form.direct
            or connection._has_events
            or connection.engine._has_events
            or connection._echo
        ):
            result = connection.exec_driver_sql(form.sql, parameters)
            rows = list(result.all()) if result.returns_rows else []
        else:
            rows = _on_cursor(connection, form.sql, parameters)
        return form.convert(rows)

    def form(self, dialect: Dialect) -> _Form:
        """The statement as `dialect` runs it (compiled on first use)."""
        return self._forms.get(dialect) or self._compile(dialect)

    def _compile(self, dialect: Dialect) -> _Form:
        compiled = self._statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {self._statement!r}")
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
        processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in names
        )
        context = dialect.execution_ctx_cls
        direct = type(dialect).do_execute is DefaultDialect.do_execute and all(
            getattr(context, hook) is getattr(DefaultExecutionContext, hook) for hook in _HOOKS
        )
        results: tuple[tuple[int, Callable[[Any], Any]], ...] | None = None
        selected = getattr(self._statement, "selected_columns", None)
        if selected is not None:
            results = (
                tuple(
                    (index, process)
                    for index, column in enumerate(selected)
                    if (
                        process := column.type.dialect_impl(dialect).result_processor(dialect, None)
                    )
                    is not None
                )
                or None
            )
        defaults = {
            name: compiled.binds[name].effective_value
            for name in names
            if not compiled.binds[name].required
        }
        form = _Form(
            compiled.string, names, processors, compiled.positional, direct, results, defaults
        )
        self._forms[dialect] = form
        return form


def _on_cursor(
    connection: SAConnection, sql: str, parameters: tuple[Any, ...] | dict[str, Any] | None
) -> list[Any]:
    """Execute on the connection's DBAPI cursor, with SQLAlchemy's error handling.

    `exec_driver_sql` builds an execution context and a CursorResult per
    statement: ~70 k instructions each for the outbox's two statements on
    SQLite (callgrind), more than SQLite's own work for the transaction. What
    this skips is only what a dialect without execution hooks and a connection
    without events or echo (checked by the caller) do not use. Errors go
    through `Connection._handle_dbapi_exception`, as from `exec_driver_sql`:
    wrapped in SQLAlchemy's DBAPIError classes, a disconnect invalidating the
    connection, the `handle_error` event fired.
    """
    if not connection.in_transaction():
        connection.begin()
    cursor = None
    try:
        cursor = connection.connection.cursor()
        if parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = list(cursor.fetchall()) if cursor.description else []
        cursor.close()
    except BaseException as exc:
        connection._handle_dbapi_exception(exc, sql, parameters, cursor, None)
    return rows


class PreparedOutbox:
    """The outbox's statements (`huddle.events.outbox.OutboxStatements`) as `Prepared` ones."""

    def __init__(self, next_id: ClauseElement, insert: ClauseElement) -> None:
        self._next_id = Prepared(next_id)
        self._insert = Prepared(insert)

    def next_id(self, connection: SAConnection) -> int:
        ((value,),) = self._next_id.execute(connection)
        return int(value)

    def insert(self, connection: SAConnection, row: Mapping[str, Any]) -> None:
        self._insert.execute(connection, row)


class PreparedQueries:
    """`huddle.db.queries.QueryRunner` with each statement `Prepared` (compiled once), read
    in one hop into the sync layer (override 3), on SQLite on one read connection
    (override 5) or a pooled connection's sqlite3 connection (override 4)."""

    def __init__(self) -> None:
        self._prepared: dict[int, tuple[ClauseElement, Prepared]] = {}
        self._readers: WeakKeyDictionary[Engine, _Reader] = WeakKeyDictionary()

    async def select(self, engine: AsyncEngine, queries: Sequence[Query]) -> list[list[Any]]:
        sync = engine.sync_engine
        if _raw_readable(sync):
            reader = await self._reader(sync)
            if reader is not None:
                prepared = [(self._prepare(statement), params) for statement, params in queries]
                rows = reader.read(sync.dialect, prepared)
                if rows is not None:
                    return rows
                # It could not read them: this read goes through the pool (which reports
                # the error as SQLAlchemy's), the next opens another reader.
                self._readers.pop(sync, None)
                reader.close()
        return await greenlet_spawn(self._select, sync, queries)

    async def _reader(self, engine: Engine) -> _Reader | None:
        """The engine's read connection, opened if needed; None when it cannot be opened
        (the read goes through the pool, whose error says why)."""
        reader = self._readers.get(engine)
        if reader is not None and reader.pool is engine.pool:
            return reader
        if reader is not None:  # the engine was disposed: its pool is a new one
            reader.close()
            del self._readers[engine]
        try:
            reader = await greenlet_spawn(_Reader, engine)
        except Exception:
            return None
        self._readers[engine] = reader
        return reader

    def close(self) -> None:
        """Close the SQLite read connections (override 5); an engine's next read opens one."""
        for reader in list(self._readers.values()):
            reader.close()
        self._readers.clear()

    async def transact(self, engine: AsyncEngine, work: Callable[[SAConnection], T]) -> T:
        """Checkout, BEGIN, `work`, COMMIT and checkin in one hop (override 3)."""
        return await greenlet_spawn(_transact, engine.sync_engine, work)

    def _select(self, engine: Engine, queries: Sequence[Query]) -> list[list[Any]]:
        prepared = [(self._prepare(statement), params) for statement, params in queries]
        if _raw_readable(engine):
            rows = _read_raw(engine, prepared)
            if rows is not None:
                return rows
        with engine.connect() as connection:
            return [statement.execute(connection, params) for statement, params in prepared]

    def _prepare(self, statement: ClauseElement) -> Prepared:
        entry = self._prepared.get(id(statement))
        if entry is None or entry[0] is not statement:
            entry = self._prepared[id(statement)] = (statement, Prepared(statement))
        return entry[1]


def _raw_readable(engine: Engine) -> bool:
    """Reads may run on sqlite3 directly: the inline driver, no engine events, no echo."""
    return (
        isinstance(engine.dialect.loaded_dbapi, _Dbapi)
        and not engine._has_events
        and not engine._should_log_info()
    )


class _Reader:
    """A sqlite3 connection of the engine's that only reads, held out of the pool
    (override 5).

    Every cold socket authentication reads three statements. Checked out of
    the pool for each read, that read took a `greenlet_spawn` (a new greenlet
    and two switches), the pool's checkout and checkin, and the reset's
    rollback: ~66 µs per cold read, ~35 µs without them
    (`bench/bootstrap_reads.py`). The inline driver runs every statement on
    the event loop's thread and never yields inside a read, so one
    connection serves every read of the process, one after another. It is
    opened through the pool (`raw_connection`, the "connect" event's
    PRAGMAs applied) and `detach`ed from it, a public call: the pool opens
    another in its place when it needs one. Each statement runs in
    autocommit as before (SQLite's own read transaction per statement, none
    left open between reads, so checkpoints are never held up), and sees
    every commit made before it. It is closed by `PreparedQueries.close`
    (the runtime's stop), when its engine's pool was replaced (`dispose`),
    or on any error, after which that read runs through the pool as before.
    """

    __slots__ = ("_conn", "_fairy", "pool")

    def __init__(self, engine: Engine) -> None:
        self.pool = engine.pool
        self._fairy = engine.raw_connection()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = cast(Connection, self._fairy.driver_connection)._connection
            self._fairy.detach()
        except BaseException:
            self._fairy.close()
            raise

    def read(
        self, dialect: Dialect, prepared: list[tuple[Prepared, Mapping[str, Any]]]
    ) -> list[list[Any]] | None:
        """The statements' rows; None when it cannot read them (the caller closes it)."""
        conn = self._conn
        if conn is None:
            return None
        forms = [(statement.form(dialect), params) for statement, params in prepared]
        if not all(form.direct for form, _ in forms):
            return None
        try:
            return _run_forms(conn, forms)
        except Exception:
            return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn = None
            with contextlib.suppress(Exception):
                self._fairy.close()


def _run_forms(
    conn: sqlite3.Connection, forms: list[tuple[_Form, Mapping[str, Any]]]
) -> list[list[Any]]:
    results = []
    for form, params in forms:
        cursor = conn.cursor()
        parameters = form.bind(params)
        cursor.execute(form.sql, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description else []
        cursor.close()
        results.append(form.convert(rows))
    return results


def _transact(engine: Engine, work: Callable[[SAConnection], T]) -> T:
    with engine.begin() as connection:
        return work(connection)


def _read_raw(
    engine: Engine, prepared: list[tuple[Prepared, Mapping[str, Any]]]
) -> list[list[Any]] | None:
    """The statements' rows read on a pooled connection's sqlite3 connection; None when
    it cannot read them so (the caller reads through a `Connection` then).

    What `Connection` adds around a read on SQLite is a transaction that
    issues nothing (pysqlite's `do_begin`), a rollback on close that finds
    nothing to roll back (as the pool's reset then does once more), and its
    own and an execution context's objects: with the inline driver's cursor
    and its `await_`, ~18 % of a page read's instructions. The pool's
    checkout and checkin (its events, the reset) are kept: `raw_connection`
    is the public way to them. On any error the connection is invalidated
    (its state is unknown) and None returned, so that the read runs again
    through `Connection`, which reports the error as SQLAlchemy does
    (wrapped in its DBAPIError classes, a disconnect recognized).
    """
    dialect = engine.dialect
    forms = [(statement.form(dialect), params) for statement, params in prepared]
    if not all(form.direct for form, _ in forms):
        return None
    try:
        raw = engine.raw_connection()
    except Exception:
        # The pool could not open a connection (a database that cannot be opened):
        # `raw_connection` raises the driver's own error; the read through a
        # `Connection` raises it as SQLAlchemy's, which callers recognize.
        return None
    try:
        conn = cast(Connection, raw.driver_connection)._connection
        if conn is None:
            raise ValueError("Connection closed")
        results = _run_forms(conn, forms)
    except Exception as exc:
        raw.invalidate(exc)  # checks it in, closed
        return None
    except BaseException as exc:
        raw.invalidate(exc)
        raise
    raw.close()
    return results
