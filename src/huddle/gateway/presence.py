"""Who is online in each team, on this instance.

A user is online in a team while at least one of their sockets is in the
team's room (authenticated; an expired socket has left its rooms). `join` and
`leave` say when that flips, so the gateway emits `presence_changed` only on a
user's first socket up and last socket down, per team.

The counts are per process. With several gateway instances each one reports
the users connected to it; see docs/protocol.md.
"""

from __future__ import annotations


class Presence:
    def __init__(self) -> None:
        # team id -> user id -> number of that user's sockets in the team's room
        self._teams: dict[int, dict[int, int]] = {}

    def join(self, team_id: int, user_id: int) -> bool:
        """Count one more socket of `user_id` in `team_id`; True when the user just came online."""
        users = self._teams.setdefault(team_id, {})
        count = users.get(user_id, 0) + 1
        users[user_id] = count
        return count == 1

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
        return True

    def online(self, team_id: int) -> list[int]:
        """The users online in a team, by id."""
        return sorted(self._teams.get(team_id, {}))

    def is_online(self, team_id: int, user_id: int) -> bool:
        return user_id in self._teams.get(team_id, {})

    def drop_team(self, team_id: int) -> None:
        """Forget a deleted team."""
        self._teams.pop(team_id, None)
