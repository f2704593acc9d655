"""Reads on the hottest paths as plain Core statements: rows, not ORM objects.

A `QueryRunner` runs SELECTs (and `transact`, a unit of work's outbox writes
when it has no ORM session) on a connection of their own and returns their
rows as tuples, with the column types' conversions applied (UTC datetimes).
The public path is SQLAlchemy Core's `Connection.execute` in an
`AsyncConnection`'s `run_sync`; with the SQLAlchemy accel module each
statement is compiled once and run as driver SQL, checkout, reads and checkin
share one hop into SQLAlchemy's sync layer, and on SQLite the reads go to one
sqlite3 connection held for reads (`huddle.accel.sqlalchemy.PreparedQueries`).
Statements must give every bind parameter by name (`bindparam("user_id")`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement

from huddle.accel import Accel

T = TypeVar("T")

Query = tuple[ClauseElement, Mapping[str, Any]]
"""A SELECT and its parameters by bind name."""


class QueryRunner(Protocol):
    async def select(self, engine: AsyncEngine, queries: Sequence[Query]) -> list[list[Any]]:
        """The rows (tuples) of each query, read on one connection checked out for them
        and returned to the pool after."""
        ...

    async def transact(self, engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
        """`work(connection)` in a transaction on a connection of its own (sync layer),
        committed when it returns, rolled back when it raises."""
        ...

    def close(self) -> None:
        """Close any connection the runner holds outside the pool (before `dispose`)."""
        ...


class CoreQueries:
    """`QueryRunner` through SQLAlchemy Core (the public path)."""

    async def select(self, engine: AsyncEngine, queries: Sequence[Query]) -> list[list[Any]]:
        def read(connection: Connection) -> list[list[Any]]:
            return [
                [tuple(row) for row in connection.execute(statement, dict(params))]  # type: ignore[call-overload]
                for statement, params in queries
            ]

        # Closed directly: `async with` closes in a task of its own, and until it
        # runs, every request ahead of it in the loop checks out a connection of its
        # own (past the pool's size, SQLite connections were opened and closed).
        connection = await engine.connect()
        try:
            return await connection.run_sync(read)
        finally:
            await connection.close()

    async def transact(self, engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
        def run(connection: Connection) -> T:
            with connection.begin():
                return work(connection)

        connection = await engine.connect()
        try:
            return await connection.run_sync(run)
        finally:
            await connection.close()

    def close(self) -> None:
        """Nothing to close: every read checks a connection out of the pool."""


def query_runner(accel: Accel) -> QueryRunner:
    """Core, or the SQLAlchemy accel module's prepared statements when it runs."""
    if accel.sqlalchemy:
        from huddle.accel.sqlalchemy import PreparedQueries

        return PreparedQueries()
    return CoreQueries()
