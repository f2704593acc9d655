"""Who is online in each team: this instance's sockets, and the store that adds up every instance's.

A user is online in a team while at least one of their sockets, on any
instance, is in the team's room (authenticated; an expired socket has left its
rooms). `presence_changed` tells of transitions: the user's first socket up
and last socket down in that team, cluster-wide.

Two layers:

- `Presence` counts this instance's sockets per team and user. The hub updates
  it as sockets enter and leave team rooms; `join`/`leave` say when this
  instance's presence of a user flips.
- A `PresenceStore` turns those flips into the cluster's view. The hub tells it
  of every flip (`changed`); the store answers whether the hub should emit
  `presence_changed` to the local room itself, and `online` lists a team.

Whatever the store, the hub hands each transition it is to announce to a
`PresenceBatch` and sends what it gathered at the end of a short window
(PRESENCE_BATCH_MS): only pairs whose state differs from what the room last
heard, each team's in one pass.

Two stores, chosen by settings at startup (`create_presence_store`):

- `MemoryPresence` (no REDIS_URL): this instance is the cluster, so each flip
  is a transition and the hub announces it itself.
- `RedisPresence` (`presence_redis.py`, REDIS_URL set): Redis keeps which
  instances hold each user in each team, decides transitions atomically, and
  puts one `presence_changed` control message per transition on the event bus;
  every instance's relay emits it to its own room. While Redis is unreachable
  it answers like `MemoryPresence` for this instance's users.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from huddle.config import Settings


class Presence:
    """This instance's sockets in team rooms, counted per team and user."""

    def __init__(self) -> None:
        # team id -> user id -> number of that user's sockets in the team's room
        self._teams: dict[int, dict[int, int]] = {}
        # user id -> the teams in which the user has at least one socket here
        self._users: dict[int, set[int]] = {}
        self.on_listed: Callable[[int], None] | None = None

    def join(self, team_id: int, user_id: int) -> bool:
        """Count one more socket of `user_id` in `team_id`; True when the user just came online."""
        users = self._teams.setdefault(team_id, {})
        count = users.get(user_id, 0) + 1
        users[user_id] = count
        if count > 1:
            return False
        self._users.setdefault(user_id, set()).add(team_id)
        return True

    def leave(self, team_id: int, user_id: int) -> bool:
        """Count one socket fewer; True when the user just went offline in that team."""
        users = self._teams.get(team_id)
        if not users or user_id not in users:
            return False
        count = users[user_id] - 1
        if count > 0:
            users[user_id] = count
            return False
        del users[user_id]
        if not users:
            del self._teams[team_id]
        self._forget(user_id, team_id)
        return True

    def online(self, team_id: int) -> list[int]:
        """The users online in a team, by id.

        Every store starts its `team_presence` answer here, so this is where
        `on_listed` (the hub's presence batch) learns a client may be seeing
        a state that the current window will undo.
        """
        if self.on_listed is not None:
            self.on_listed(team_id)
        return sorted(self._teams.get(team_id, {}))

    def count(self, team_id: int) -> int:
        """How many users are online in a team here."""
        return len(self._teams.get(team_id, ()))

    def is_online(self, team_id: int, user_id: int) -> bool:
        return user_id in self._teams.get(team_id, {})

    def has_team(self, team_id: int) -> bool:
        """Whether some socket here is in the team's room."""
        return team_id in self._teams

    def teams_of(self, user_id: int) -> list[int]:
        """The teams in which `user_id` has a socket here, by id."""
        return sorted(self._users.get(user_id, ()))

    def users(self) -> list[int]:
        """Every user with a socket in some team room here."""
        return list(self._users)

    def drop_team(self, team_id: int) -> list[int]:
        """Forget a deleted team; returns the users who were still counted in it."""
        users = list(self._teams.pop(team_id, {}))
        for user_id in users:
            self._forget(user_id, team_id)
        return users

    def _forget(self, user_id: int, team_id: int) -> None:
        teams = self._users.get(user_id)
        if teams is not None:
            teams.discard(team_id)
            if not teams:
                del self._users[user_id]


@dataclass(slots=True)
class _Pending:
    before: bool
    """What the room heard before the window (see `PresenceBatch`)."""
    now: bool
    since: float
    """When `now` last moved away from `before`."""
    revealed: bool = False
    """A `team_presence` answer may have shown a state the window then undid."""


PresenceChanges = list[tuple[int, bool]]
"""A team's changes of one window: (user id, online now), in order of first change."""


class PresenceBatch:
    """Presence changes gathered over one window per team, and what each team room last heard.

    Why: announced one by one, N members connecting cost N² frames and one
    write per member per join. Gathered, a window costs each member one
    frame (`{teamId, online: [...], offline: [...]}`), and a change undone
    within the window (a flapping client) costs nothing. The hub owns the
    timer, the window lengths and the sending; this is the bookkeeping, kept
    free of I/O so it can be tested on its own.

    Each team's window opens with its first change and lasts the `window`
    that change was recorded with; `take` hands out the teams whose window
    is over (`due`), or every team.

    A pair's state before the window is what this instance last announced to
    the room when it knows (`_heard` holds the users last announced online,
    and forgets a user once announced offline, so it stays as small as the
    rooms' online members); otherwise it is the opposite of the pair's first
    change, since transitions alternate.

    One exception to "a flap costs nothing": a client that asked
    `team_presence` while the flap was up was told the passing state, and
    would keep it. So a listing (`listed`) of the team after the flap began,
    or up to `grace` seconds before (a Redis store's answer can run ahead of
    the bus that brings the transition here), has the flap restated.
    """

    def __init__(self, grace: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._grace = grace
        self._clock = clock
        # team id -> user id -> its pending change; both in order of first change
        self._pending: dict[int, dict[int, _Pending]] = {}
        # team id -> when its window ends
        self._due: dict[int, float] = {}
        # team id -> the users last announced online to the team's room here
        self._heard: dict[int, set[int]] = {}
        # team id -> when `team_presence` last listed it
        self._listed: dict[int, float] = {}

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def next_due(self) -> float | None:
        """When the earliest pending window ends (the batch's clock), or None."""
        return min(self._due.values()) if self._due else None

    def record(self, team_id: int, user_id: int, *, online: bool, window: float = 0.0) -> None:
        """A user's presence in a team changed to `online` (the latest word wins).

        `window`: seconds the team's window lasts, when this change opens one.
        """
        users = self._pending.get(team_id)
        if users is None:
            users = self._pending[team_id] = {}
            self._due[team_id] = self._clock() + window
        entry = users.get(user_id)
        if entry is None:
            before = user_id in self._heard.get(team_id, ()) or not online
            users[user_id] = _Pending(before, online, self._clock())
        elif online != entry.now:
            entry.now = online
            if online != entry.before:
                entry.since = self._clock()
            elif self._listed.get(team_id, -1.0) >= entry.since - self._grace:
                entry.revealed = True

    def listed(self, team_id: int) -> None:
        """`team_presence` is answering for this team (with the state as it is now)."""
        self._listed[team_id] = self._clock()

    def take(
        self, listened: Callable[[int], bool], *, due_only: bool = False
    ) -> list[tuple[int, PresenceChanges]]:
        """End windows: per team, the users whose state differs from what the room last heard.

        `due_only`: only the teams whose window is over; else every team.
        Teams come in the order of their first change, users likewise, each
        with its state now. Taking counts as announcing. `listened(team_id)`
        tells whether anyone here is in the room: a room nobody is in keeps
        no record (whoever joins it later asks `team_presence`).
        """
        now = self._clock()
        if due_only:
            ended = [team for team, due in self._due.items() if due <= now]
        else:
            ended = list(self._pending)
        horizon = now - self._grace
        self._listed = {team: at for team, at in self._listed.items() if at >= horizon}
        teams: list[tuple[int, PresenceChanges]] = []
        for team_id in ended:
            users = self._pending.pop(team_id)
            del self._due[team_id]
            changes = [(u, e.now) for u, e in users.items() if e.now != e.before or e.revealed]
            if not changes:
                continue
            teams.append((team_id, changes))
            if not listened(team_id):
                self._heard.pop(team_id, None)
                continue
            heard = self._heard.setdefault(team_id, set())
            for user_id, online in changes:
                if online:
                    heard.add(user_id)
                else:
                    heard.discard(user_id)  # announced offline: nothing left to remember
            if not heard:
                del self._heard[team_id]
        return teams

    def forget_room(self, team_id: int) -> None:
        """Nobody here is in the team's room any more: drop what it heard."""
        self._heard.pop(team_id, None)

    def forget_team(self, team_id: int) -> None:
        """A deleted team: drop its pending changes too, so nothing stale is announced."""
        self._heard.pop(team_id, None)
        self._pending.pop(team_id, None)
        self._due.pop(team_id, None)
        self._listed.pop(team_id, None)

    def clear(self) -> None:
        self._pending.clear()
        self._due.clear()
        self._heard.clear()
        self._listed.clear()


def presence_frame(team_id: int, changes: PresenceChanges) -> dict[str, object]:
    """The `presence_changed` payload of one team's window (SPEC §4.3), ids sorted."""
    return {
        "teamId": team_id,
        "online": sorted(user_id for user_id, online in changes if online),
        "offline": sorted(user_id for user_id, online in changes if not online),
    }


class PresenceStore(Protocol):
    """The cluster's view of presence, fed with this instance's flips."""

    @property
    def local(self) -> Presence:
        """This instance's counts; the hub updates them before calling `changed`."""
        ...

    def changed(self, team_id: int, user_id: int, *, quiet: bool = False) -> bool:
        """This instance's presence of `user_id` in `team_id` flipped (see `local`).

        Returns True when the caller should emit `presence_changed` to its own
        room; otherwise the store sees that every instance hears of it. `quiet`
        (a deleted team): record the change, announce nothing. Never raises and
        never waits for I/O, so it is safe on any socket's path.
        """
        ...

    async def online(self, team_id: int) -> list[int]:
        """The users online in a team on any instance, sorted by id. Never raises."""
        ...

    async def start(self) -> None:
        """Start background work (inside the lifespan)."""
        ...

    async def stop(self) -> None:
        """Stop it, and leave the cluster so this instance's users do not linger."""
        ...


class MemoryPresence:
    """One instance on its own: each flip of its counts is a transition."""

    def __init__(self) -> None:
        self._local = Presence()

    @property
    def local(self) -> Presence:
        return self._local

    def changed(self, team_id: int, user_id: int, *, quiet: bool = False) -> bool:
        return not quiet

    async def online(self, team_id: int) -> list[int]:
        return self._local.online(team_id)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def create_presence_store(settings: Settings) -> PresenceStore:
    """The store settings ask for: Redis when REDIS_URL is set, else memory."""
    if settings.redis_url:
        from huddle.gateway.presence_redis import RedisPresence

        return RedisPresence.from_url(settings.redis_url, prefix=settings.redis_prefix)
    return MemoryPresence()
