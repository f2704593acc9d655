"""Statements compiled once per dialect and executed as driver SQL, for the hottest writes.

Why this exists: executing a Core statement costs an execution context per
call even when the compiled form comes from the cache (the parameters are
processed through the compiled statement, result metadata is set up); for the
outbox's two statements per event that was ~120 µs of CPU each on SQLite,
more than SQLite's own work for the whole transaction. `Prepared` compiles its
statement with SQLAlchemy's compiler once per dialect, keeps the bind
processors of its parameters' types (JSON serialization, UTC datetimes) and
runs the SQL with `Connection.exec_driver_sql`, which keeps what matters of
SQLAlchemy's execution: its error wrapping, disconnect handling and events.
Where the dialect adds nothing around a DBAPI execute (SQLite) and the
connection has no events, it goes one step lower, to the DBAPI cursor, with the
same error handling (`_on_cursor`).

For plain statements whose every bind parameter is given on each call: no
parameter defaults, no expanding `IN` lists, no literal rendering.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.default import DefaultDialect, DefaultExecutionContext
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

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


class Prepared:
    """A Core statement executed as its compiled driver SQL."""

    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        self._forms: WeakKeyDictionary[Dialect, _Form] = WeakKeyDictionary()

    def execute(self, connection: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Run on `connection`, in its transaction; `params` by bind name (column key).

        Returns the statement's rows (empty without RETURNING). Errors surface
        as `Connection.execute` raises them: SQLAlchemy's DBAPIError classes,
        a lost connection invalidated.
        """
        form = self._forms.get(connection.dialect) or self._compile(connection.dialect)
        parameters: tuple[Any, ...] | dict[str, Any] | None = None
        if form.names:
            if params is None:
                raise TypeError("this statement takes parameters")
            values = [
                params[name] if process is None else process(params[name])
                for name, process in zip(form.names, form.processors, strict=True)
            ]
            parameters = (
                tuple(values) if form.positional else dict(zip(form.names, values, strict=True))
            )
        if (
            not form.direct
            or connection._has_events
            or connection.engine._has_events
            or connection._echo
        ):
            result = connection.exec_driver_sql(form.sql, parameters)
            return list(result.all()) if result.returns_rows else []
        return _on_cursor(connection, form.sql, parameters)

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
        form = _Form(compiled.string, names, processors, compiled.positional, direct)
        self._forms[dialect] = form
        return form


def _on_cursor(
    connection: Connection, sql: str, parameters: tuple[Any, ...] | dict[str, Any] | None
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
