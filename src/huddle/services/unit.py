"""The unit of work: one transaction, its outbox events, and their publication after commit.

Only services open units; routes and socket handlers call services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from huddle.db.queries import CoreQueries, Query, QueryRunner
from huddle.errors import DatabaseUnavailable
from huddle.events import outbox
from huddle.events.bus import EventBus
from huddle.events.envelope import Envelope
from huddle.metrics import EVENTS_WRITTEN_BY_TYPE

_CORE = CoreQueries()


def is_unavailable(exc: BaseException) -> bool:
    """True when a database error means "cannot reach the database", not a bad query."""
    if isinstance(exc, PoolTimeout):
        # No pooled connection came free in time: every one is stuck on a database
        # that stopped answering (or the pool is saturated): unavailable either way.
        return True
    if isinstance(exc, OperationalError | InterfaceError):
        text = str(exc).lower()
        # SQLite reports a locked database as OperationalError too; that is load, not outage.
        return "locked" not in text or "unable to open" in text
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        # A connection lost while it was being opened (asyncpg: "connection was closed
        # in the middle of operation", a server still starting up) reaches us as a
        # plain DBAPIError: look at what the driver raised.
        return any(_lost_connection(cause) for cause in _causes(exc))
    return isinstance(exc, ConnectionError | TimeoutError | OSError)


_CONNECTION_ERRORS = (
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "PostgresConnectionError",
    "CannotConnectNowError",
    "ClientCannotConnectError",
)


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = getattr(exc, "orig", None) or exc.__cause__
    while current is not None and len(seen) < 8 and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _lost_connection(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return True
    return any(cls.__name__ in _CONNECTION_ERRORS for cls in type(exc).__mro__)


class Unit:
    """An open unit of work: an ORM session if the service uses one, and outbox events.

    `session` opens on first use (its transaction begins with its first
    statement). `emit` asks for an event; the events are written when the unit
    commits, after the session's pending changes, in the commit's own hop into
    SQLAlchemy's sync layer. A unit that only emits events (no ORM work) writes
    them on a plain connection instead: an ORM session, its transaction and
    its close cost as much as the event's two statements and commit together.
    After the commit, `events` holds what was written, in id order.
    """

    __slots__ = ("_db", "_session", "events", "pending")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._session: AsyncSession | None = None
        self.pending: list[outbox.Pending] = []
        self.events: list[Envelope] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self._db.sessionmaker()
        return self._session

    async def emit(
        self,
        type: str,
        *,
        team_id: int,
        actor_id: int | None,
        body: dict[str, Any],
        subject_user_id: int | None = None,
    ) -> None:
        """Ask for an outbox event; it gets its id and row with the unit's commit."""
        self.pending.append(outbox.Pending(type, team_id, actor_id, body, subject_user_id))


class Database:
    """The session factory and the bus: what a service needs to run a unit of work."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: EventBus,
        statements: outbox.OutboxStatements | None = None,
        queries: QueryRunner | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.engine: AsyncEngine = sessionmaker.kw["bind"]
        self.bus = bus
        self.statements = statements or outbox.CoreStatements()
        self.queries = queries or CoreQueries()

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[Unit]:
        """A transaction; commits on success, then publishes its events in order.

        Writing the events, the commit and the session's close share one hop
        into SQLAlchemy's sync layer (`session.begin()` and a separate close
        would take three). On an exception `_close` rolls back; a database
        that cannot be reached is `DatabaseUnavailable`.
        """
        unit = Unit(self)
        try:
            with _database_errors():
                yield unit
                if unit._session is not None:
                    unit.events = await unit._session.run_sync(
                        _write_and_commit, self.statements, unit.pending
                    )
                elif unit.pending:
                    unit.events = await self.queries.transact(
                        self.engine,
                        partial(outbox.write, statements=self.statements, pending=unit.pending),
                    )
        finally:
            if unit._session is not None:
                await _close(unit._session)
        for event in unit.events:
            EVENTS_WRITTEN_BY_TYPE[event.type].inc()
        if unit.events:
            await self.bus.publish(unit.events)

    async def select(self, *queries: Query, prepared: bool = True) -> list[list[tuple[Any, ...]]]:
        """The rows of each (statement, parameters), read on one connection in one hop
        into SQLAlchemy's sync layer (see `huddle.db.queries`).

        `prepared=False`: through SQLAlchemy Core even when the accel module
        prepares statements (it compiles a statement once, so it cannot take an
        expanding `IN` parameter).
        """
        runner = self.queries if prepared else _CORE
        # A plain connection rather than a Session: nothing here needs the ORM.
        with _database_errors():
            return await runner.select(self.engine, queries)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (no commit), closed directly, with "cannot reach the
        database" as DatabaseUnavailable."""
        session = self.sessionmaker()
        try:
            with _database_errors():
                yield session
        finally:
            await _close(session)


@contextmanager
def _database_errors() -> Iterator[None]:
    """A database error that means "cannot reach the database" as DatabaseUnavailable
    (503); any other error as it is."""
    try:
        yield
    except (OperationalError, InterfaceError, DBAPIError, PoolTimeout, OSError) as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable() from exc
        raise


def _write_and_commit(
    session: Session, statements: outbox.OutboxStatements, pending: list[outbox.Pending]
) -> list[Envelope]:
    """Flush the session, write the unit's events after its changes, commit and close."""
    try:
        events: list[Envelope] = []
        if pending:
            session.flush()
            events = outbox.write(session.connection(), statements, pending)
        session.commit()
        return events
    finally:
        session.close()


async def _close(session: AsyncSession) -> None:
    """Close a session directly.

    `async with AsyncSession` closes through a new task (SQLAlchemy shields the
    close from cancellation), which costs a task and loop turns on every unit of
    work, on the hottest paths we have. Closing in `finally` returns the
    connection all the same; a close interrupted by cancellation is the pool's
    to clean up, as on any other cancelled checkout.

    A session with no transaction and no objects (closed by its unit's commit,
    or never used) has nothing to close; skipping it saves a hop.
    """
    if session.in_transaction() or session.identity_map:
        await session.close()
