"""Reads on the hottest paths as plain Core statements: rows, not ORM objects.

A `QueryRunner` runs a SELECT on a (sync) connection and returns its rows as
tuples, with the column types' conversions applied (UTC datetimes), and runs a
function on a connection of its own (`on_connection`). The public path is
SQLAlchemy Core's `Connection.execute` and an `AsyncConnection`'s `run_sync`;
with the SQLAlchemy accel module each statement is compiled once and run as
driver SQL, and checkout, reads and checkin share one hop into SQLAlchemy's
sync layer (`huddle.accel.sqlalchemy.PreparedQueries`). Statements must give
every bind parameter by name (`bindparam("user_id")`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement

from huddle.accel import Accel

T = TypeVar("T")


class QueryRunner(Protocol):
    def rows(
        self, connection: Connection, statement: ClauseElement, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The statement's rows on `connection` (in its transaction)."""
        ...

    async def on_connection(self, engine: AsyncEngine, fn: Callable[[Connection], T]) -> T:
        """`fn` on a connection checked out for it, returned to the pool after."""
        ...


class CoreQueries:
    """`QueryRunner` through SQLAlchemy Core (the public path)."""

    def rows(
        self, connection: Connection, statement: ClauseElement, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in connection.execute(statement, dict(params))]  # type: ignore[call-overload]

    async def on_connection(self, engine: AsyncEngine, fn: Callable[[Connection], T]) -> T:
        # Closed directly: `async with` closes in a task of its own, and until it
        # runs, every request ahead of it in the loop checks out a connection of its
        # own (past the pool's size, SQLite connections were opened and closed).
        connection = await engine.connect()
        try:
            return await connection.run_sync(fn)
        finally:
            await connection.close()


def query_runner(accel: Accel) -> QueryRunner:
    """Core, or the SQLAlchemy accel module's prepared statements when it runs."""
    if accel.sqlalchemy:
        from huddle.accel.sqlalchemy import PreparedQueries

        return PreparedQueries()
    return CoreQueries()
