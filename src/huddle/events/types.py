"""The event catalogue: every team event type, who receives it, and whose cached data it stales.

One entry per type, read by everything that has to know: the gateway's relay
(which sockets move between rooms around the emit), the replay of missed
events (who may see it), and the user-data caches (what to drop). Adding an
event type is one entry here plus the service that emits it
(`Unit.emit(type, …)`); nothing else has a list of types.

Every team event goes to the team's room (`team:<id>`), to the members whose
sockets are in it; `rooms` says how the event moves sockets around its emit:

- `TEAM`: nobody moves.
- `SUBJECT_JOINS` (`member_added`): the added user's sockets join the room
  first, so they receive the event too, and every later one.
- `SUBJECT_LEAVES` (`member_removed`): the event is emitted first, so the
  removed user learns it, then their sockets leave the room.
- `ROOM_CLOSES` (`team_deleted`): emitted, then every socket leaves.

`membership` events are about one user (the envelope's `subject_user_id`),
and a replay shows them to that user whether or not they are still a member.

`stale` says whose cached teams and tasks the event changes:

- `SUBJECT`: the user the event is about (their teams or role);
- `ASSIGNEE`: the user the task is assigned to now (their assigned tasks);
- `TEAM`: every member of the team (a renamed team; a task whose previous
  assignee the event does not name).

A `task_updated` whose `changes` include `assigneeId` is `TEAM` too: the
previous assignee lost the task, and the event does not say who that was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from huddle.events.envelope import Envelope


class Rooms(Enum):
    """How an event moves sockets around its emit to the team's room."""

    TEAM = "team"
    SUBJECT_JOINS = "subject_joins"
    SUBJECT_LEAVES = "subject_leaves"
    ROOM_CLOSES = "room_closes"


class Stale(Enum):
    """Whose cached teams and tasks an event changes."""

    SUBJECT = "subject"
    ASSIGNEE = "assignee"
    TEAM = "team"


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    rooms: Rooms
    stale: frozenset[Stale]
    membership: bool = False


CATALOGUE: dict[str, EventType] = {
    kind.name: kind
    for kind in (
        EventType("task_created", Rooms.TEAM, frozenset({Stale.ASSIGNEE})),
        EventType("task_updated", Rooms.TEAM, frozenset({Stale.ASSIGNEE})),
        EventType("task_deleted", Rooms.TEAM, frozenset({Stale.TEAM})),
        EventType("team_updated", Rooms.TEAM, frozenset({Stale.TEAM})),
        EventType("team_deleted", Rooms.ROOM_CLOSES, frozenset({Stale.TEAM})),
        EventType("member_added", Rooms.SUBJECT_JOINS, frozenset({Stale.SUBJECT}), membership=True),
        EventType("member_updated", Rooms.TEAM, frozenset({Stale.SUBJECT}), membership=True),
        EventType(
            "member_removed", Rooms.SUBJECT_LEAVES, frozenset({Stale.SUBJECT}), membership=True
        ),
    )
}

UNKNOWN = EventType("", Rooms.TEAM, frozenset({Stale.TEAM}))
"""What an event of a type not in the catalogue is treated as: a plain team event that may
change anything of the team (an older or newer writer on the same bus)."""

MEMBERSHIP_TYPES = frozenset(name for name, kind in CATALOGUE.items() if kind.membership)


def of(event: Envelope) -> EventType:
    """The catalogue entry of an event."""
    return CATALOGUE.get(event.type, UNKNOWN)


@dataclass(frozen=True, slots=True)
class StaleData:
    """Whose cached data an event makes stale: these users, and every member of these teams."""

    users: frozenset[int] = frozenset()
    teams: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.users or self.teams)


def stale_data(event: Envelope) -> StaleData:
    """What `event` makes stale, by its catalogue entry (see the module docstring)."""
    kind = of(event)
    users: set[int] = set()
    whole_team = Stale.TEAM in kind.stale
    if Stale.SUBJECT in kind.stale and event.subject_user_id is not None:
        users.add(event.subject_user_id)
    if Stale.ASSIGNEE in kind.stale:
        users.update(_assignees(event.payload))
        changes = event.payload.get("changes")
        if isinstance(changes, list) and "assigneeId" in changes:
            whole_team = True
    teams = frozenset({event.team_id}) if whole_team and event.team_id is not None else frozenset()
    return StaleData(frozenset(users), teams)


def _assignees(payload: dict[str, Any]) -> Iterator[int]:
    task = payload.get("task")
    if isinstance(task, dict):
        assignee = task.get("assigneeId")
        if type(assignee) is int:
            yield assignee
