"""One socket's state, its timers, and the registry of every socket on this instance.

    PENDING ──token ok──▶ AUTHENTICATED ──exp reached──▶ EXPIRED ──refresh ok──▶ AUTHENTICATED
       │                        │                           │
       └─timeout / error──▶ CLOSED ◀──revoked / error───────┴──grace over──┘

A session is plain state: the namespace decides the transitions and does the
I/O. Timers are `loop.call_later` handles, not tasks, because an idle socket
should cost a few hundred bytes, not a sleeping coroutine per timer; the
token's deadline, which every authenticated socket holds for hours, shares one
timer with every other socket's (`huddle.gateway.deadlines`).

While a session is *syncing* (authenticating, or replaying after `resume` or a
refresh) the relay does not emit to it; it appends every event to `buffer`,
and the sync step delivers them afterwards, in order and without duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from huddle.events.envelope import Envelope
from huddle.security.ratelimit import SocketEventLimiter
from huddle.security.tokens import Claims

if TYPE_CHECKING:
    from huddle.gateway.deadlines import Deadlines

MAX_BUFFERED_EVENTS = 10_000
"""Events held for one syncing socket; past that it is told to resync instead."""


class State(Enum):
    PENDING = "pending"
    """Connected, no valid token yet; AUTH_TIMEOUT runs."""
    AUTHENTICATED = "authenticated"
    """In its rooms, receiving team events."""
    EXPIRED = "expired"
    """Token expired: out of every room, AUTH_GRACE runs."""
    CLOSED = "closed"
    """Disconnected, or being disconnected; every event is ignored."""


@dataclass(eq=False, slots=True)
class SocketSession:
    """What the gateway knows about one Socket.IO connection."""

    sid: str
    client_ip: str
    limiter: SocketEventLimiter
    state: State = State.PENDING
    localhost: bool = False
    """Whether `client_ip` is loopback (the generous local limits apply)."""
    user_id: int | None = None
    user: dict[str, Any] | None = None
    # The access token is kept only to call the backend on the user's behalf;
    # `claims` are what verifying it once said.
    token: str | None = field(default=None, repr=False)
    claims: Claims | None = None
    issued_at: float = 0.0
    family_id: str | None = None
    """The refresh family of the access token (its `fam`): revoking it closes the socket."""
    expires_at: float = 0.0
    team_ids: set[int] = field(default_factory=set)
    degraded: bool = False
    # The newest event this socket had been sent when it expired: replay starts after it.
    missed_after: int | None = None
    syncing: bool = False
    buffer: list[Envelope] = field(default_factory=list)
    overflowed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Short-lived named timers (auth timeout, grace), created with the first one.
    timers: dict[str, asyncio.TimerHandle] | None = None
    # The token's deadline (its warning, then its expiry) is kept by `deadlines`,
    # one timer for every socket (`huddle.gateway.deadlines`): `deadline` is the
    # wall-clock time it is for, `deadline_tick` its bucket there (0: none).
    deadlines: Deadlines | None = None
    deadline: float = 0.0
    deadline_tick: int = 0

    @property
    def authenticated(self) -> bool:
        return self.state is State.AUTHENTICATED

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def start_sync(self) -> None:
        """Hold live events back from now on (the relay appends them to `buffer`)."""
        self.syncing = True
        self.buffer = []
        self.overflowed = False

    def hold(self, event: Envelope) -> None:
        """Called by the relay for a syncing socket."""
        if len(self.buffer) >= MAX_BUFFERED_EVENTS:
            self.overflowed = True
            return
        self.buffer.append(event)

    def take_buffer(self) -> list[Envelope]:
        held, self.buffer = self.buffer, []
        return held

    def stop_sync(self) -> None:
        self.syncing = False
        self.buffer = []

    def schedule(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` after `delay` seconds, replacing any timer of the same name."""
        self.cancel(name)
        loop = asyncio.get_running_loop()
        if self.timers is None:
            self.timers = {}
        self.timers[name] = loop.call_later(max(0.0, delay), self._fire, name, callback)

    def _fire(self, name: str, callback: Callable[[], None]) -> None:
        if self.timers is not None:
            self.timers.pop(name, None)
        callback()

    def cancel(self, *names: str) -> None:
        if self.timers is None:
            return
        for name in names:
            handle = self.timers.pop(name, None)
            if handle is not None:
                handle.cancel()

    def set_deadline(self, deadlines: Deadlines, when: float) -> None:
        """The token's next deadline (wall-clock `when`), replacing the one it had."""
        self.deadlines = deadlines
        self.deadline = when
        deadlines.set(self, when)

    def clear_deadline(self) -> None:
        if self.deadlines is not None:
            self.deadlines.discard(self)

    def cancel_all(self) -> None:
        self.clear_deadline()
        if self.timers is None:
            return
        for handle in self.timers.values():
            handle.cancel()
        self.timers = None


class SessionRegistry:
    """Every socket on this instance, by sid and by user."""

    def __init__(self) -> None:
        self._by_sid: dict[str, SocketSession] = {}
        # A list per user, not a set: most users have one socket (a set of one is
        # 216 bytes, a list 64) and MAX_CONNECTIONS_PER_USER keeps them short.
        self._by_user: dict[int, list[SocketSession]] = {}
        self._by_team: dict[int, set[SocketSession]] = {}
        self._syncing: set[SocketSession] = set()
        # Sockets a replay brought further than the relay has got: sid -> the last id
        # sent. Live emits up to it skip them (see `huddle.gateway.replay`).
        self._ahead: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_sid)

    def __iter__(self) -> Iterator[SocketSession]:
        return iter(list(self._by_sid.values()))

    def add(self, session: SocketSession) -> None:
        self._by_sid[session.sid] = session

    def get(self, sid: str) -> SocketSession | None:
        return self._by_sid.get(sid)

    def remove(self, session: SocketSession) -> None:
        self._by_sid.pop(session.sid, None)
        self.unbind(session)
        for team_id in list(session.team_ids):
            self.left_team(session, team_id)
        self._syncing.discard(session)
        self._ahead.pop(session.sid, None)

    def bind(self, session: SocketSession, user_id: int) -> None:
        """Record that `session` speaks for `user_id` (authenticated or in its grace)."""
        if session.user_id is not None and session.user_id != user_id:
            self.unbind(session)
        session.user_id = user_id
        sessions = self._by_user.setdefault(user_id, [])
        if session not in sessions:
            sessions.append(session)

    def unbind(self, session: SocketSession) -> None:
        if session.user_id is None:
            return
        sessions = self._by_user.get(session.user_id)
        if sessions is not None and session in sessions:
            sessions.remove(session)
            if not sessions:
                del self._by_user[session.user_id]

    def of_user(self, user_id: int) -> list[SocketSession]:
        return list(self._by_user.get(user_id, ()))

    def authenticated_count(self, user_id: int, *, besides: SocketSession | None = None) -> int:
        """Authenticated sockets of a user (MAX_CONNECTIONS_PER_USER counts these)."""
        return sum(
            1
            for s in self._by_user.get(user_id, ())
            if s.state is State.AUTHENTICATED and s is not besides
        )

    def mark_syncing(self, session: SocketSession) -> None:
        session.start_sync()
        self._syncing.add(session)

    def unmark_syncing(self, session: SocketSession) -> None:
        session.stop_sync()
        self._syncing.discard(session)

    @property
    def syncing(self) -> set[SocketSession]:
        return self._syncing

    def mark_ahead(self, session: SocketSession, sent: int) -> None:
        """`session` already has every event through `sent`: the relay must not send them."""
        self._ahead[session.sid] = max(sent, self._ahead.get(session.sid, 0))

    @property
    def ahead(self) -> dict[str, int]:
        return self._ahead

    def skip_ahead(self, event_id: int) -> list[str]:
        """The sids that already have `event_id`; marks the relay has now reached end."""
        skip = [sid for sid, sent in self._ahead.items() if event_id <= sent]
        for sid in [sid for sid, sent in self._ahead.items() if event_id >= sent]:
            del self._ahead[sid]
        return skip

    def joined_team(self, session: SocketSession, team_id: int) -> None:
        """Record that `session` is now in the room of `team_id`."""
        session.team_ids.add(team_id)
        self._by_team.setdefault(team_id, set()).add(session)

    def left_team(self, session: SocketSession, team_id: int) -> None:
        session.team_ids.discard(team_id)
        sessions = self._by_team.get(team_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_team[team_id]

    def in_team(self, team_id: int) -> list[SocketSession]:
        """Sessions on this instance currently in the room of `team_id`."""
        return list(self._by_team.get(team_id, ()))
