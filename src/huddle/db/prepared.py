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

For plain statements whose every bind parameter is given on each call: no
parameter defaults, no expanding `IN` lists, no literal rendering.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True, slots=True)
class _Form:
    """One dialect's SQL for the statement and how to bind its parameters."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool


class Prepared:
    """A Core statement executed as its compiled driver SQL."""

    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        self._forms: WeakKeyDictionary[Dialect, _Form] = WeakKeyDictionary()

    def execute(
        self, connection: Connection, params: Mapping[str, Any] | None = None
    ) -> CursorResult[Any]:
        """Run on `connection`, in its transaction; `params` by bind name (column key)."""
        form = self._forms.get(connection.dialect) or self._compile(connection.dialect)
        if not form.names:
            return connection.exec_driver_sql(form.sql)
        if params is None:
            raise TypeError("this statement takes parameters")
        values = [
            params[name] if process is None else process(params[name])
            for name, process in zip(form.names, form.processors, strict=True)
        ]
        if form.positional:
            return connection.exec_driver_sql(form.sql, tuple(values))
        return connection.exec_driver_sql(form.sql, dict(zip(form.names, values, strict=True)))

    def _compile(self, dialect: Dialect) -> _Form:
        compiled = self._statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {self._statement!r}")
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
        processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in names
        )
        form = _Form(compiled.string, names, processors, compiled.positional)
        self._forms[dialect] = form
        return form
