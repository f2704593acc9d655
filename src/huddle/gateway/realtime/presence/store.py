"""Who is online in each team across instances: the store that adds up every instance's sockets.

A user is online in a team while at least one of their sockets, on any
instance, is in the team's room (authenticated; an expired socket has left its
rooms). `presence_changed` tells of transitions: the user's first socket up
and last socket down in that team, cluster-wide.

Two layers:

- `Presence` (`local.py`) counts this instance's sockets per team and user.
  The hub updates it as sockets enter and leave team rooms; `join`/`leave`
  say when this instance's presence of a user flips.
- A `PresenceStore` (here) turns those flips into the cluster's view. The hub tells it
  of every flip (`changed`); the store answers whether the hub should emit
  `presence_changed` to the local room itself, and `online` lists a team.

Whatever the store, the hub hands each transition it is to announce to a
`PresenceBatch` (`batch.py`) and sends what it gathered at the end of a
short window (PRESENCE_BATCH_MS, longer for big rooms): one frame per team
with the users whose state differs from what the room last heard.

Two stores, chosen by settings at startup (`create_presence_store`):

- `MemoryPresence` (no REDIS_URL): this instance is the cluster, so each flip
  is a transition and the hub announces it itself.
- `RedisPresence` (`redis_store.py`, REDIS_URL set): Redis keeps which
  instances hold each user in each team, decides transitions atomically, and
  puts one `presence_changed` control message per transition on the event bus;
  every instance's relay emits it to its own room. While Redis is unreachable
  it answers like `MemoryPresence` for this instance's users.
"""

from __future__ import annotations

from typing import Protocol

from huddle.config import Settings
from huddle.gateway.realtime.presence.local import Presence


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
        from huddle.gateway.realtime.presence.redis_store import RedisPresence

        return RedisPresence.from_url(settings.redis_url, prefix=settings.redis_prefix)
    return MemoryPresence()
