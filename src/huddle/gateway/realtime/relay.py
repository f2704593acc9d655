"""From the event bus to the rooms: every committed event reaches its team, in event-id order.

The bus calls `handle` once per event, in id order (its Sequencer sees to
that), and awaits it, so one emit is queued on every socket before the next
starts. How an event moves sockets between rooms around its emit is the event
catalogue's `rooms` (`huddle.events.types`): an added member's sockets join
first, a removed member's leave after, a deleted team's room closes after.
Whose cached user data the event makes stale is the catalogue's too, and the
relay is where the source hears of it (`UserDataSource.invalidate`).

A socket that is syncing (authenticating or replaying) is skipped by every
room emit and holds the event instead; `apply` later delivers it to that one
socket with the same rules. Control messages (no event id) are not team
events: `sessions_revoked` and `family_revoked` disconnect the sockets they
revoke; `presence_changed` (from the Redis presence store) goes to the named
teams' rooms here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from huddle.events import types
from huddle.events.envelope import FAMILY_REVOKED, PRESENCE_CHANGED, SESSIONS_REVOKED, Envelope
from huddle.events.types import Rooms, StaleData
from huddle.gateway.realtime.hub import Hub, team_room
from huddle.gateway.session import SocketSession
from huddle.gateway.sources.base import UserDataSource
from huddle.logging import get_logger
from huddle.metrics import EVENTS_EMITTED_BY_TYPE, FANOUT_LATENCY

log = get_logger("huddle.gateway.realtime.relay")

RevocationHandler = Callable[[int, float], Awaitable[None]]
FamilyRevocationHandler = Callable[[int, str, float], Awaitable[None]]


class EventRelay:
    def __init__(
        self,
        hub: Hub,
        source: UserDataSource,
        on_revoked: RevocationHandler,
        on_family_revoked: FamilyRevocationHandler | None = None,
    ) -> None:
        self._hub = hub
        self._source = source
        self._on_revoked = on_revoked
        self._on_family_revoked = on_family_revoked
        self.head: int | None = None
        """The newest event id handed to the rooms (or known at start)."""
        self.active = True

    async def handle(self, event: Envelope) -> None:
        """The bus subscriber."""
        if not self.active:
            return
        if event.id is None:
            await self._control(event)
            return
        if self.head is None or event.id > self.head:
            self.head = event.id
        if event.team_id is None:
            return
        hub = self._hub
        skip: list[str] = []
        if syncing := hub.sessions.syncing:  # rarely: a socket authenticating or replaying
            for session in syncing:
                session.hold(event)
            skip = [s.sid for s in syncing]
        if hub.sessions.ahead:  # rarely: a socket replayed beyond this relay's head
            skip += hub.sessions.skip_ahead(event.id)
        team_id = event.team_id
        rooms = types.of(event).rooms
        room = team_room(team_id)
        subject = event.subject_user_id
        if rooms is Rooms.SUBJECT_JOINS and subject is not None:
            arrived: list[SocketSession] = []
            for session in hub.sessions.of_user(subject):
                if (
                    session.authenticated
                    and not session.syncing
                    and await hub.join_team(session, team_id, announce=False)
                ):
                    arrived.append(session)
            await hub.fanout.room(room, event.type, event.payload, skip=skip)
            if arrived:
                await hub.announce(team_id, subject, online=True)
        elif rooms is Rooms.SUBJECT_LEAVES and subject is not None:
            await hub.fanout.room(room, event.type, event.payload, skip=skip)
            for session in hub.sessions.of_user(subject):
                if not session.syncing:
                    await hub.leave_team(session, team_id)
        elif rooms is Rooms.ROOM_CLOSES:
            await hub.fanout.room(room, event.type, event.payload, skip=skip)
            for session in hub.sessions.in_team(team_id):
                if not session.syncing:
                    await hub.leave_team(session, team_id, announce=False)
            hub.forget_team(team_id)
        else:
            await hub.fanout.room(room, event.type, event.payload, skip=skip)
        EVENTS_EMITTED_BY_TYPE[event.type].inc()
        _observe_latency(event.payload)
        self._source.invalidate(types.stale_data(event))

    async def apply(self, session: SocketSession, event: Envelope, *, emit: bool) -> None:
        """Deliver one held event to one socket with the room rules of `handle`.

        `emit=False` applies only the room changes (the socket already got the
        event from a replay).
        """
        hub = self._hub
        team_id = event.team_id
        if team_id is None or session.closed:
            return
        about_me = event.subject_user_id is not None and event.subject_user_id == session.user_id
        rooms = types.of(event).rooms
        if rooms is Rooms.SUBJECT_JOINS and about_me:
            came_online = await hub.join_team(session, team_id, announce=False)
            if emit:
                await hub.send(session, event.type, event.payload)
            if came_online and session.user_id is not None:
                await hub.announce(team_id, session.user_id, online=True)
        elif rooms is Rooms.SUBJECT_LEAVES and about_me:
            if emit:
                await hub.send(session, event.type, event.payload)
            await hub.leave_team(session, team_id)
        elif team_id in session.team_ids:
            if emit:
                await hub.send(session, event.type, event.payload)
            if rooms is Rooms.ROOM_CLOSES:
                await hub.leave_team(session, team_id, announce=False)

    async def _control(self, event: Envelope) -> None:
        if event.type == PRESENCE_CHANGED:
            await self._presence(event)
            return
        if event.type == FAMILY_REVOKED:
            await self._family_revoked(event)
            return
        if event.type != SESSIONS_REVOKED:
            return
        try:
            user_id = int(event.payload["userId"])
            revoked_at = float(event.payload["revokedAt"])
        except (KeyError, TypeError, ValueError):
            log.warning("control_message_malformed", type=event.type)
            return
        self._source.invalidate(StaleData(users=frozenset({user_id})))
        await self._on_revoked(user_id, revoked_at)

    async def _family_revoked(self, event: Envelope) -> None:
        try:
            user_id = int(event.payload["userId"])
            family_id = event.payload["familyId"]
            revoked_at = float(event.payload["revokedAt"])
        except (KeyError, TypeError, ValueError):
            family_id = None
        if not isinstance(family_id, str):
            log.warning("control_message_malformed", type=event.type)
            return
        if self._on_family_revoked is not None:
            await self._on_family_revoked(user_id, family_id, revoked_at)

    async def _presence(self, event: Envelope) -> None:
        try:
            user_id = int(event.payload["userId"])
            online = event.payload["online"] is True
            team_ids = [int(team_id) for team_id in event.payload["teamIds"]]
        except (KeyError, TypeError, ValueError):
            log.warning("control_message_malformed", type=event.type)
            return
        for team_id in team_ids:
            await self._hub.emit_presence(team_id, user_id, online=online)


def _observe_latency(payload: dict[str, Any]) -> None:
    stamp = payload.get("timestamp")
    if not isinstance(stamp, str):
        return
    try:
        committed = datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return
    FANOUT_LATENCY.observe(max(0.0, time.time() - committed))
