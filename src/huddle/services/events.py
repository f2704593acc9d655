"""Reading the event log back: what a user missed after a given event id (SPEC §4.4).

Both replay paths use this one query — the gateway's in-process source and
`GET /api/events`, which the HTTP source calls — so they answer identically.

What a user sees is what they would have received live:
- every event of a team while they were a member of it, and
- every membership event about them (`subject_user_id`), so a removed member
  hears its `member_removed` and a new member its `member_added`.

Membership at `after` is rebuilt from the present: the user's current teams,
corrected by the earliest membership event about them in the window (a first
`member_added` means they were not a member before it; a first
`member_removed`/`member_updated` means they were). A member removed in the
window therefore replays the team's events up to their removal and none after;
a member added in the window none from before they joined.

Edge cases, decided:
- `after` below `pruned_through` (older than EVENT_RETENTION keeps):
  `resync_required`, no events; `last_event_id` is the head of the log, where
  a client that reloaded through REST continues.
- `after` above the head of the log (an id this log never handed out: another
  deployment, a reset database, a made-up number): `resync_required` too —
  the client's state cannot be reconciled by replay.
- `after` equal to the head: nothing to replay, not a resync.
- A team deleted while the user was offline: its memberships are gone with it
  and `team_deleted` names no member, so the user does not replay it unless a
  membership event about them in the same team falls inside the window. The
  fresh `authenticated` that precedes a replay lists the teams as they are, so
  the client still drops it.
- A page holds at most `limit` events; when more remain, `more` is true and
  `last_event_id` is the last id examined: ask again with `after` set to it.
  A page may hold fewer than `limit` events and still have `more` (events the
  user may not see are skipped, not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from huddle.db.models import Event, EventCounter, Membership
from huddle.errors import BadRequest
from huddle.events import outbox
from huddle.events.envelope import Envelope
from huddle.events.items import MAX_PAGE
from huddle.events.types import MEMBERSHIP_TYPES
from huddle.services.unit import Database


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a user's missed events.

    `last_event_id`: the log position the reader is synced through once it has
    these events — the head of the log when nothing more remains, else the last
    id examined (the `after` of the next call).
    """

    events: list[Envelope]
    resync_required: bool
    last_event_id: int
    more: bool = False


class EventService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def visible_after(self, user_id: int, after: int, *, limit: int = MAX_PAGE) -> EventPage:
        """Events the user may see with id > after, in id order; see the module docstring."""
        if after < 0:
            raise BadRequest("lastEventId must be a non-negative integer.")
        limit = max(1, min(limit, MAX_PAGE))
        async with self._db.read() as session:
            # The head first: every event up to it has committed (ids are taken
            # under the counter's row lock), so "synced through head" is true.
            head = int((await session.execute(select(EventCounter.last_id))).scalar_one())
            if after > head:
                return EventPage([], resync_required=True, last_event_id=head)
            if after == head:
                return EventPage([], resync_required=False, last_event_id=head)
            # Current membership first, then the membership events about the user:
            # a change committed between the two shows in the events, which decide.
            current = set(
                await session.scalars(
                    select(Membership.team_id).where(Membership.user_id == user_id)
                )
            )
            about_me = (
                await session.execute(
                    select(Event.team_id, Event.type)
                    .where(Event.subject_user_id == user_id, Event.id > after)
                    .order_by(Event.id)
                )
            ).all()
            member: dict[int, bool] = {team_id: True for team_id in current}
            seen: set[int] = set()
            for team_id, type_ in about_me:
                if team_id in seen or type_ not in MEMBERSHIP_TYPES:
                    continue
                seen.add(team_id)
                member[team_id] = type_ != "member_added"
            rows: list[Event] = []
            if member:
                rows = list(
                    await session.scalars(
                        select(Event)
                        .where(Event.id > after, Event.id <= head, Event.team_id.in_(list(member)))
                        .order_by(Event.id)
                        .limit(limit + 1)
                    )
                )
            # Read after the events: a prune that removed some of them has
            # committed by now, so it shows here.
            pruned = int((await session.execute(select(EventCounter.pruned_through))).scalar_one())
        if after < pruned:
            return EventPage([], resync_required=True, last_event_id=head)
        more = len(rows) > limit
        rows = rows[:limit]
        events: list[Envelope] = []
        for row in rows:
            if row.subject_user_id == user_id and row.type in MEMBERSHIP_TYPES:
                member[row.team_id] = row.type != "member_removed"
                events.append(outbox.to_envelope(row))
            elif member.get(row.team_id, False):
                events.append(outbox.to_envelope(row))
        last = rows[-1].id if more else head
        return EventPage(events, resync_required=False, last_event_id=last, more=more)

    async def prune(self, *, keep_events: int, keep_for: timedelta) -> int:
        """Apply EVENT_RETENTION once: drop what it no longer keeps; returns how many."""
        async with self._db.unit() as unit:
            return await outbox.prune(unit.session, keep_events=keep_events, keep_for=keep_for)
