"""This instance's sockets in team rooms, counted per team and user.

A user is online in a team while at least one of their sockets, on any
instance, is in the team's room (authenticated; an expired socket has left its
rooms). `Presence` counts this instance's sockets; `join`/`leave` say when this
instance's presence of a user flips. The store (`store.py`) turns those flips
into the cluster's view; the batch (`batch.py`) gathers the announcements.
"""

from __future__ import annotations

from collections.abc import Callable


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
