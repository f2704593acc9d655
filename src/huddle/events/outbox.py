"""The transactional outbox: events written in the same transaction as their change.

Ids come from the one-row `event_counter` table. Incrementing it takes that
row's write lock until commit, so a second writer waits, and ids are gapless
and strictly increasing in commit order. That is what lets a client resume
from "the last id I saw" without missing an event committed late.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from huddle.accel import Accel
from huddle.clock import iso, utcnow
from huddle.db.models import Event, EventCounter
from huddle.events.envelope import Envelope

# Rows go in as parameters on the unit's connection: no ORM object, no flush.
_NEXT_ID = text("UPDATE event_counter SET last_id = last_id + 1 WHERE id = 1 RETURNING last_id")
_INSERT = insert(Event)


class OutboxStatements(Protocol):
    """The two statements an event costs, on the unit's (sync) connection."""

    def next_id(self, connection: Connection) -> int:
        """Take the next event id (the counter row stays locked until commit)."""
        ...

    def insert(self, connection: Connection, row: Mapping[str, Any]) -> None:
        """Insert one `events` row."""
        ...


class CoreStatements:
    """`OutboxStatements` through SQLAlchemy Core (the public path)."""

    def next_id(self, connection: Connection) -> int:
        return int(connection.execute(_NEXT_ID).scalar_one())

    def insert(self, connection: Connection, row: Mapping[str, Any]) -> None:
        connection.execute(_INSERT, dict(row))


def statements(accel: Accel) -> OutboxStatements:
    """Core statements, or the SQLAlchemy accel module's prepared ones when it runs."""
    if accel.sqlalchemy:
        from huddle.accel.sqlalchemy import PreparedOutbox

        return PreparedOutbox(_NEXT_ID, _INSERT)
    return CoreStatements()


@dataclass(frozen=True, slots=True)
class Pending:
    """An event a unit of work asked for; its id and row come with the unit's commit."""

    type: str
    team_id: int
    actor_id: int | None
    body: dict[str, Any]
    subject_user_id: int | None = None


def write(
    connection: Connection, statements: OutboxStatements, pending: Sequence[Pending]
) -> list[Envelope]:
    """Write `pending` on `connection`, in the transaction its unit is about to commit
    (sync layer). The first `next_id` takes the counter row's lock until that commit,
    so the lock is held only for these statements and the commit itself."""
    events = []
    for event in pending:
        event_id = statements.next_id(connection)
        now = utcnow()
        payload: dict[str, Any] = {"eventId": event_id, "teamId": event.team_id, **event.body}
        payload["actorId"] = event.actor_id
        payload["timestamp"] = iso(now)
        statements.insert(
            connection,
            {
                "id": event_id,
                "team_id": event.team_id,
                "type": event.type,
                "payload": payload,
                "actor_id": event.actor_id,
                "subject_user_id": event.subject_user_id,
                "created_at": now,
            },
        )
        events.append(
            to_envelope_parts(
                event_id, event.type, event.team_id, payload, event.subject_user_id, event.actor_id
            )
        )
    return events


def to_envelope_parts(
    event_id: int,
    type: str,
    team_id: int,
    payload: dict[str, Any],
    subject_user_id: int | None,
    actor_id: int | None,
) -> Envelope:
    return Envelope(
        type=type,
        payload=payload,
        id=event_id,
        team_id=team_id,
        subject_user_id=subject_user_id,
        actor_id=actor_id,
    )


def to_envelope(row: Event) -> Envelope:
    return to_envelope_parts(
        row.id, row.type, row.team_id, dict(row.payload), row.subject_user_id, row.actor_id
    )


async def last_event_id(session: AsyncSession) -> int:
    return int((await session.execute(select(EventCounter.last_id))).scalar_one())


async def events_between(session: AsyncSession, after: int, before: int) -> list[Envelope]:
    """Events with after < id < before, in order (fills a bus gap)."""
    rows = await session.scalars(
        select(Event).where(Event.id > after, Event.id < before).order_by(Event.id)
    )
    return [to_envelope(row) for row in rows]


async def prune(session: AsyncSession, *, keep_events: int, keep_for: timedelta) -> int:
    """Drop events older than the retention; remember how far, for `resync_required`."""
    counter = (await session.execute(select(EventCounter))).scalar_one()
    cutoff_time: datetime = utcnow() - keep_for
    by_count = counter.last_id - keep_events
    newest_old = await session.scalar(
        select(Event.id).where(Event.created_at < cutoff_time).order_by(Event.id.desc()).limit(1)
    )
    through = max(by_count, newest_old or 0, counter.pruned_through)
    if through <= counter.pruned_through:
        return 0
    result = await session.execute(delete(Event).where(Event.id <= through))
    await session.execute(
        update(EventCounter).where(EventCounter.id == 1).values(pruned_through=through)
    )
    return int(getattr(result, "rowcount", 0) or 0)
