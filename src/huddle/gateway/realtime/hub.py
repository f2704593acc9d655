"""The gateway's shared state and the operations every part of it uses.

`Hub` owns the socket registry, presence, the fan-out and the rooms. Rooms are
`user:<id>` and `team:<id>`; a session's `team_ids` mirrors the team rooms it
is in, so presence and the relay never have to ask python-socketio.

Presence: entering and leaving team rooms updates this instance's counts
(`presence.local`); a flip is handed to the presence store (`announce`), which
either asks the hub to emit `presence_changed` to its own room or has every
instance emit it (`emit_presence`, from the relay) — see `presence.py`. Either
way `emit_presence` only records the change. A team's window opens with its
first change and lasts PRESENCE_BATCH_MS, longer for big rooms
(`presence_window`); one timer per hub, armed for the earliest window end,
sends each ended window's real changes as one `presence_changed {teamId,
online, offline}` (`flush_presence`). A burst of N arrivals costs each member
one frame per window instead of N, a big team at most a bounded number of
frames a second, and a flap nothing.

Ending a socket is two steps: `terminate` marks it closed and takes it out of
every room at once (so it receives nothing more), then a task sends the
Socket.IO disconnect after the current handler has returned — whatever the
handler was answering (an `authentication_error`, an acknowledgement) is
already queued on the socket by then, and the queue is sent in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from huddle.config import Settings
from huddle.errors import HuddleError, RateLimited
from huddle.gateway import payloads
from huddle.gateway.realtime.fanout import Fanout
from huddle.gateway.realtime.presence.batch import PresenceBatch, RecentCount, presence_frame
from huddle.gateway.realtime.presence.store import PresenceStore, create_presence_store
from huddle.gateway.session import SessionRegistry, SocketSession, State
from huddle.logging import get_logger, log_enabled
from huddle.metrics import AUTH_ERROR_CODES, SOCKETS_AUTHENTICATED

log = get_logger("huddle.gateway")

PRESENCE_WINDOW_PER_MEMBER = 0.0005
"""Seconds a team's presence window grows per member online here (see `Hub.presence_window`)."""
PRESENCE_WINDOW_MAX = 2.0
"""The longest a presence window gets, however big the room and however busy the gateway."""
PRESENCE_FRAME_COST = 8.5e-6
"""Seconds one presence frame costs per socket it reaches, its write included: ~1 µs in the
broadcast loop and ~7.5 µs for the write, which a presence frame rarely shares with another
frame (a flush to 2,000 connections takes ~15 ms; docs/benchmarks.md)."""
PRESENCE_BUDGET = 0.02
"""The share of the process presence may take while windows are stretched by load."""


def team_room(team_id: int) -> str:
    return f"team:{team_id}"


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


class Hub:
    def __init__(self, sio: Any, settings: Settings, presence: PresenceStore | None = None) -> None:
        self.settings = settings
        self.fanout = Fanout(sio)
        self.sessions = SessionRegistry()
        self.presence = presence if presence is not None else create_presence_store(settings)
        self._tasks: set[asyncio.Task[None]] = set()
        self._presence_window = settings.presence_batch_ms / 1000
        self._presence_batch = PresenceBatch(grace=self._presence_window)
        self.presence.local.on_listed = self._presence_batch.listed
        self._presence_timer: asyncio.TimerHandle | None = None
        self._presence_timer_due = 0.0
        self._presence_sent = RecentCount()
        self._presence_flushing = False
        self._presence_closed = False

    # --- background work ---------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` in the background; its failure is logged, never raised anywhere."""
        task = asyncio.create_task(self._guarded(work, name), name=f"huddle-gateway-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway_task_failed", task=name)

    async def cancel_tasks(self) -> None:
        """Stop background work at shutdown. Presence not yet announced is dropped:
        every client is being told to reconnect, and will ask `team_presence` then."""
        self._presence_closed = True
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        self._presence_batch.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- state ---------------------------------------------------------------

    def set_state(self, session: SocketSession, state: State) -> None:
        """Change a session's state, keeping the authenticated-sockets gauge right."""
        if session.state is State.AUTHENTICATED and state is not State.AUTHENTICATED:
            SOCKETS_AUTHENTICATED.dec()
        elif session.state is not State.AUTHENTICATED and state is State.AUTHENTICATED:
            SOCKETS_AUTHENTICATED.inc()
        session.state = state

    # --- sending -------------------------------------------------------------

    async def send(self, session: SocketSession, event: str, payload: Any) -> None:
        """Emit to one socket unless it is closed."""
        if not session.closed:
            await self.fanout.socket(session.sid, event, payload)

    async def send_error(self, session: SocketSession, error: HuddleError) -> None:
        """`error {code, message}`: a client event failed; the socket stays."""
        await self.send(session, "error", payloads.error_body(error))

    async def report(self, session: SocketSession, error: HuddleError) -> None:
        """`authentication_error {message, code, action, retryAfter?}`."""
        AUTH_ERROR_CODES[error.code].inc()
        # Refusals can come in floods; they are counted in metrics either way.
        flood = isinstance(error, RateLimited)
        if log_enabled(logging.DEBUG if flood else logging.INFO):
            emit = log.debug if flood else log.info
            emit("socket_auth_error", sid=session.sid, user_id=session.user_id, code=error.code)
        await self.send(session, "authentication_error", payloads.auth_error(error))

    async def reject(self, session: SocketSession, error: HuddleError) -> None:
        """Report a terminal authentication error, then disconnect."""
        await self.report(session, error)
        await self.terminate(session)

    async def terminate(self, session: SocketSession) -> None:
        """Close a socket: out of every room now, disconnected once the current handler returns."""
        if session.closed:
            return
        self.set_state(session, State.CLOSED)
        session.cancel_all()
        self.sessions.unmark_syncing(session)
        await self.leave_all(session)
        self.spawn(self.fanout.disconnect(session.sid), "disconnect")

    # --- rooms and presence --------------------------------------------------

    def syncing_sids(self) -> list[str]:
        return [s.sid for s in self.sessions.syncing]

    def syncing_in_team(self, team_id: int) -> list[str]:
        """The syncing sockets in a team's room: the only ones a skip list for that room
        needs (a socket outside the room receives nothing from it anyway)."""
        return [s.sid for s in self.sessions.syncing if team_id in s.team_ids]

    async def join_user_room(self, session: SocketSession) -> None:
        if session.user_id is not None and not session.closed:
            await self.fanout.enter(session.sid, user_room(session.user_id))

    async def join_team(
        self, session: SocketSession, team_id: int, *, announce: bool = True
    ) -> bool:
        """Put a session in a team's room; True when its user just came online there."""
        if team_id in session.team_ids or session.closed or session.user_id is None:
            return False
        if not await self.fanout.enter(session.sid, team_room(team_id)):
            return False
        self.sessions.joined_team(session, team_id)
        came_online = self.presence.local.join(team_id, session.user_id)
        if came_online and announce:
            await self.announce(team_id, session.user_id, online=True)
        return came_online

    async def leave_team(
        self, session: SocketSession, team_id: int, *, announce: bool = True
    ) -> bool:
        """Take a session out of a team's room; True when its user just went offline there."""
        if team_id not in session.team_ids:
            return False
        self.sessions.left_team(session, team_id)
        await self.fanout.leave(session.sid, team_room(team_id))
        if session.user_id is None:
            return False
        went_offline = self.presence.local.leave(team_id, session.user_id)
        if went_offline and not self.presence.local.has_team(team_id):
            self._presence_batch.forget_room(team_id)
        if went_offline:
            if announce:
                await self.announce(team_id, session.user_id, online=False)
            else:
                self.presence.changed(team_id, session.user_id, quiet=True)
        return went_offline

    async def set_teams(self, session: SocketSession, team_ids: Iterable[int]) -> None:
        """Make the session's team rooms exactly `team_ids`."""
        wanted = set(team_ids)
        for team_id in sorted(session.team_ids - wanted):
            await self.leave_team(session, team_id)
        for team_id in sorted(wanted - session.team_ids):
            await self.join_team(session, team_id)

    async def leave_all(self, session: SocketSession) -> None:
        """Out of every room: no team data reaches the socket any more."""
        for team_id in sorted(session.team_ids):
            await self.leave_team(session, team_id)
        if session.user_id is not None:
            await self.fanout.leave(session.sid, user_room(session.user_id))

    async def announce(self, team_id: int, user_id: int, *, online: bool) -> None:
        """This instance's presence of a user in a team flipped: tell the store, and maybe the room.

        By the time this runs the user may have flipped back (a socket closed
        meanwhile); the local room then hears nothing, and the store reads the
        counts as they are now.
        """
        if self.presence.changed(team_id, user_id) and (
            self.presence.local.is_online(team_id, user_id) == online
        ):
            await self.emit_presence(team_id, user_id, online=online)

    def forget_team(self, team_id: int) -> None:
        """A deleted team: drop its presence, pending announcements included, announcing nothing."""
        self._presence_batch.forget_team(team_id)
        for user_id in self.presence.local.drop_team(team_id):
            self.presence.changed(team_id, user_id, quiet=True)

    async def emit_presence(self, team_id: int, user_id: int, *, online: bool) -> None:
        """Record that a user's presence in a team is now `online`; the team's room hears
        it in one `presence_changed {teamId, online, offline}` at the end of the team's
        window (at once when PRESENCE_BATCH_MS is 0).

        Every announcement comes through here, this instance's own and (from
        the relay) the cluster's, in the order of the transitions, so the last
        state recorded for a pair within a window is the truth.
        """
        if self._presence_window <= 0:
            await self._send_presence(team_id, [(user_id, online)])
            return
        if self._presence_closed:
            return
        batch = self._presence_batch
        # The window's length matters only to the change that opens it.
        window = 0.0 if batch.is_open(team_id) else self.presence_window(team_id)
        opened = batch.record(team_id, user_id, online=online, window=window)
        if opened is not None:  # a window already open has its timer armed
            self._arm_presence(opened)

    def presence_window(self, team_id: int) -> float:
        """Seconds a team's presence window lasts: PRESENCE_BATCH_MS, longer under load.

        Each window costs one frame per member of the room here, so a window
        grows with the room (`PRESENCE_WINDOW_PER_MEMBER` per member), and
        with the frames presence sent in the last second across all teams: a
        storm of arrivals in many teams at once (every member of a big team is
        also in a few small ones) stretches every window until presence takes
        about `PRESENCE_BUDGET` of the process (`PRESENCE_FRAME_COST` a frame).
        Never more than `PRESENCE_WINDOW_MAX`.
        """
        sized = PRESENCE_WINDOW_PER_MEMBER * self.presence.local.count(team_id)
        loaded = self._presence_sent.last_second() * PRESENCE_FRAME_COST / PRESENCE_BUDGET
        return max(self._presence_window, min(PRESENCE_WINDOW_MAX, max(sized, loaded)))

    async def flush_presence(self, *, due_only: bool = False) -> None:
        """End the windows now (or, `due_only`, those that are over): send their real
        changes, one frame per team.

        One flush at a time: changes arriving while one sends wait for the
        next window, so two flushes never interleave frames about one user.
        """
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        if self._presence_flushing:
            return
        self._presence_flushing = True
        try:
            teams = self._presence_batch.take(self.presence.local.has_team, due_only=due_only)
            for team_id, changes in teams:
                await self._send_presence(team_id, changes)
        finally:
            self._presence_flushing = False
            self._arm_presence()

    def _arm_presence(self, due: float | None = None) -> None:
        """(Re)arm the timer for the earliest window end (`due` when only a window ending
        then was opened), unless a flush will see to it."""
        if self._presence_flushing or self._presence_closed:
            return
        if due is None:
            due = self._presence_batch.next_due()
        if due is None:
            return
        if self._presence_timer is not None:
            if self._presence_timer_due <= due:
                return
            self._presence_timer.cancel()
        loop = asyncio.get_running_loop()
        self._presence_timer_due = due
        self._presence_timer = loop.call_later(max(0.0, due - time.monotonic()), self._presence_due)

    def _presence_due(self) -> None:
        self._presence_timer = None
        self.spawn(self.flush_presence(due_only=True), "presence")

    async def _send_presence(self, team_id: int, changes: list[tuple[int, bool]]) -> None:
        """One team's changes in one frame to the team's room, except syncing sockets
        (they ask `team_presence` once synced) and, when the frame is only about
        one user, that user's own sockets (it is their own arrival or departure)."""
        skip = self.syncing_in_team(team_id)
        first = changes[0][0]
        if all(user_id == first for user_id, _ in changes):
            skip += [s.sid for s in self.sessions.of_user(first) if team_id in s.team_ids]
        await self.fanout.room(
            team_room(team_id), "presence_changed", presence_frame(team_id, changes), skip=skip
        )
        self._presence_sent.add(self.presence.local.count(team_id))
