"""Which database errors mean "cannot reach the database" (503 DATABASE_UNAVAILABLE)."""

from __future__ import annotations

import asyncpg.exceptions
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from huddle.services.unit import is_unavailable


class _DriverError(Exception):
    """What SQLAlchemy's asyncpg adapter raises, the driver's own error as its cause."""


def _wrapped(cause: BaseException | None, message: str) -> DBAPIError:
    adapted = _DriverError(message)
    adapted.__cause__ = cause
    return DBAPIError("SELECT 1", None, adapted)


def test_a_connection_lost_while_opening_is_an_outage() -> None:
    # Seen in the fault matrix: PostgreSQL cut while the pool opened a connection
    # answered 500 INTERNAL_ERROR instead of 503.
    lost = asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    )
    assert is_unavailable(_wrapped(lost, str(lost)))
    assert is_unavailable(_wrapped(ConnectionResetError(104, "reset"), "reset"))
    assert is_unavailable(_wrapped(asyncpg.exceptions.CannotConnectNowError("starting"), "x"))


def test_a_bad_statement_is_not_an_outage() -> None:
    syntax = asyncpg.exceptions.PostgresSyntaxError("syntax error at or near")
    assert not is_unavailable(_wrapped(syntax, str(syntax)))
    assert not is_unavailable(_wrapped(None, "no cause"))


def test_a_locked_sqlite_database_is_load_not_an_outage() -> None:
    assert not is_unavailable(OperationalError("UPDATE", None, Exception("database is locked")))
    assert is_unavailable(OperationalError("x", None, Exception("unable to open database file")))


def test_no_pooled_connection_in_time_is_an_outage() -> None:
    # Seen in the fault matrix: PostgreSQL silent, every pooled connection stuck,
    # the next request's checkout timed out and answered 500 instead of 503.
    assert is_unavailable(PoolTimeout("QueuePool limit of size 10 overflow 10 reached"))
