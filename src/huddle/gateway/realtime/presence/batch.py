"""Presence changes gathered per team over a short window, and what each room last heard.

See `PresenceBatch`; `presence_frame` is the wire form of one team's window
(`presence_changed {teamId, online, offline}`, SPEC §4.3).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


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

    def is_open(self, team_id: int) -> bool:
        """True while a window of the team is open (a change recorded now joins it)."""
        return team_id in self._due

    def next_due(self) -> float | None:
        """When the earliest pending window ends (the batch's clock), or None."""
        return min(self._due.values()) if self._due else None

    def record(
        self, team_id: int, user_id: int, *, online: bool, window: float = 0.0
    ) -> float | None:
        """A user's presence in a team changed to `online` (the latest word wins).

        `window`: seconds the team's window lasts, when this change opens one.
        Returns when that new window ends, or None when the team's window was
        already open (so a caller's timer needs no look at every window).
        """
        opened: float | None = None
        users = self._pending.get(team_id)
        if users is None:
            users = self._pending[team_id] = {}
            opened = self._due[team_id] = self._clock() + window
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
        return opened

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


class RecentCount:
    """How many of something happened in the last second, in tenth-of-a-second buckets.

    A running total over the buckets, oldest first, so that both calls cost
    the same whatever the rate (`last_second` runs for every presence window
    that opens, thousands a second in a reconnect storm).
    """

    __slots__ = ("_buckets", "_clock", "_total")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [slot, count], oldest first
        self._total = 0

    def add(self, count: int) -> None:
        slot = int(self._clock() * 10)
        buckets = self._buckets
        if buckets and buckets[-1][0] == slot:
            buckets[-1][1] += count
        else:
            buckets.append([slot, count])
        self._total += count
        self._expire(slot)

    def last_second(self) -> int:
        if self._buckets:
            self._expire(int(self._clock() * 10))
        return self._total

    def _expire(self, slot: int) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] <= slot - 10:
            self._total -= buckets.popleft()[1]
