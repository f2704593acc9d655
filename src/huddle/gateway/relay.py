"""From the event bus to the rooms: every committed event reaches its team, in event-id order.

The bus calls `handle` once per event, in id order (its Sequencer sees to
that), and awaits it, so one emit is queued on every socket before the next
starts. Membership events move sockets between rooms around their emit:

- `member_added`: the added user's sockets join the room first, so they
  receive the event too;
- `member_removed`: emitted first, so the removed user learns it, then their
  sockets leave the room and get nothing more from that team;
- `team_deleted`: emitted, then every socket leaves the room.

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

from huddle.events.envelope import FAMILY_REVOKED, PRESENCE_CHANGED, SESSIONS_REVOKED, Envelope
from huddle.gateway.hub import Hub, team_room
from huddle.gateway.session import SocketSession
from huddle.gateway.userdata import UserDataSource
from huddle.logging import get_logger
from huddle.metrics import EVENTS_EMITTED_BY_TYPE, FANOUT_LATENCY

log = get_logger("huddle.gateway.relay")

MEMBER_ADDED = "member_added"
MEMBER_REMOVED = "member_removed"
TEAM_DELETED = "team_deleted"
TASK_EVENTS = frozenset({"task_created", "task_updated", "task_deleted"})
# Events after which every member's cached teams or tasks may be stale.
TEAM_WIDE = frozenset({"team_updated", "team_deleted", "task_deleted"})

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
        affected = self._affected_users(event)
        room = team_room(event.team_id)
        if event.type == MEMBER_ADDED and event.subject_user_id is not None:
            arrived: list[SocketSession] = []
            for session in hub.sessions.of_user(event.subject_user_id):
                if (
                    session.authenticated
                    and not session.syncing
                    and await hub.join_team(session, event.team_id, announce=False)
                ):
                    arrived.append(session)
            await hub.fanout.room(room, event.type, event.payload, skip=skip)
            if arrived:
                await hub.announce(event.team_id, event.subject_user_id, online=True)
        elif event.type == MEMBER_REMOVED and event.subject_user_id is not None:
            await hub.fanout.room(room, event.type, event.payload, skip=skip)
            for session in hub.sessions.of_user(event.subject_user_id):
                if not session.syncing:
                    await hub.leave_team(session, event.team_id)
        elif event.type == TEAM_DELETED:
            await hub.fanout.room(room, event.type, event.payload, skip=skip)
            for session in hub.sessions.in_team(event.team_id):
                if not session.syncing:
                    await hub.leave_team(session, event.team_id, announce=False)
            hub.forget_team(event.team_id)
        else:
            await hub.fanout.room(room, event.type, event.payload, skip=skip)
        EVENTS_EMITTED_BY_TYPE[event.type].inc()
        _observe_latency(event.payload)
        for user_id in affected:
            self._source.invalidate(user_id)

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
        if event.type == MEMBER_ADDED and about_me:
            came_online = await hub.join_team(session, team_id, announce=False)
            if emit:
                await hub.send(session, event.type, event.payload)
            if came_online and session.user_id is not None:
                await hub.announce(team_id, session.user_id, online=True)
        elif event.type == MEMBER_REMOVED and about_me:
            if emit:
                await hub.send(session, event.type, event.payload)
            await hub.leave_team(session, team_id)
        elif team_id in session.team_ids:
            if emit:
                await hub.send(session, event.type, event.payload)
            if event.type == TEAM_DELETED:
                await hub.leave_team(session, team_id, announce=False)

    def _affected_users(self, event: Envelope) -> set[int]:
        """Users whose cached teams or tasks this event makes stale."""
        users: set[int] = set()
        if event.subject_user_id is not None:
            users.add(event.subject_user_id)
        if event.type in TASK_EVENTS:
            task = event.payload.get("task")
            if isinstance(task, dict) and isinstance(task.get("assigneeId"), int):
                users.add(task["assigneeId"])
            changes = event.payload.get("changes")
            reassigned = isinstance(changes, list) and "assigneeId" in changes
            if not reassigned and event.type not in TEAM_WIDE:
                return users
        elif event.type not in TEAM_WIDE:
            return users
        # The previous assignee, or every member, is unknown here: drop the
        # cache of every member connected to this instance.
        if event.team_id is not None:
            users.update(s.user_id for s in self._hub.sessions.in_team(event.team_id) if s.user_id)
        return users

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
        self._source.invalidate(user_id)
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
