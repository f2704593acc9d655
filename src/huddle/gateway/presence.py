"""Who is online in each team: this instance's sockets, and the store that adds up every instance's.

A user is online in a team while at least one of their sockets, on any
instance, is in the team's room (authenticated; an expired socket has left its
rooms). `presence_changed` goes out once per transition: on the user's first
socket up and last socket down in that team, cluster-wide.

Two layers:

- `Presence` counts this instance's sockets per team and user. The hub updates
  it as sockets enter and leave team rooms; `join`/`leave` say when this
  instance's presence of a user flips.
- A `PresenceStore` turns those flips into the cluster's view. The hub tells it
  of every flip (`changed`); the store answers whether the hub should emit
  `presence_changed` to the local room itself, and `online` lists a team.

Two stores, chosen by settings at startup (`create_presence_store`):

- `MemoryPresence` (no REDIS_URL): this instance is the cluster, so each flip
  is a transition and the hub announces it at once.
- `RedisPresence` (`presence_redis.py`, REDIS_URL set): Redis keeps which
  instances hold each user in each team, decides transitions atomically, and
  puts one `presence_changed` control message per transition on the event bus;
  every instance's relay emits it to its own room. While Redis is unreachable
  it answers like `MemoryPresence` for this instance's users.
"""

from __future__ import annotations

from typing import Protocol

from huddle.config import Settings


class Presence:
    """This instance's sockets in team rooms, counted per team and user."""

    def __init__(self) -> None:
        # team id -> user id -> number of that user's sockets in the team's room
        self._teams: dict[int, dict[int, int]] = {}
        # user id -> the teams in which the user has at least one socket here
        self._users: dict[int, set[int]] = {}

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
        """The users online in a team, by id."""
        return sorted(self._teams.get(team_id, {}))

    def is_online(self, team_id: int, user_id: int) -> bool:
        return user_id in self._teams.get(team_id, {})

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
