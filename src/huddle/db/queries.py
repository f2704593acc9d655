"""Reads on the hottest paths as plain Core statements: rows, not ORM objects.

A `QueryRunner` runs a SELECT on a (sync) connection and returns its rows as
tuples, with the column types' conversions applied (UTC datetimes). The
public path is SQLAlchemy Core's `Connection.execute`; with the SQLAlchemy
accel module each statement is compiled once and run as driver SQL
(`huddle.accel.sqlalchemy.PreparedQueries`). Statements must give every bind
parameter by name (`bindparam("user_id")`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement

from huddle.accel import Accel


class QueryRunner(Protocol):
    def rows(
        self, connection: Connection, statement: ClauseElement, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The statement's rows on `connection` (in its transaction)."""
        ...


class CoreQueries:
    """`QueryRunner` through SQLAlchemy Core (the public path)."""

    def rows(
        self, connection: Connection, statement: ClauseElement, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in connection.execute(statement, dict(params))]  # type: ignore[call-overload]


def query_runner(accel: Accel) -> QueryRunner:
    """Core, or the SQLAlchemy accel module's prepared statements when it runs."""
    if accel.sqlalchemy:
        from huddle.accel.sqlalchemy import PreparedQueries

        return PreparedQueries()
    return CoreQueries()
