"""The event catalogue: who receives each event type and whose cached data it makes stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from huddle.events import types
from huddle.events.envelope import Envelope
from huddle.events.types import CATALOGUE, MEMBERSHIP_TYPES, Rooms, StaleData, stale_data

SERVICES = Path(types.__file__).resolve().parents[1] / "services"


def event(
    kind: str, payload: dict[str, object] | None = None, subject: int | None = None
) -> Envelope:
    return Envelope(type=kind, payload=payload or {}, id=1, team_id=9, subject_user_id=subject)


def test_every_event_a_service_emits_is_in_the_catalogue() -> None:
    emitted = set()
    for source in SERVICES.glob("*.py"):
        emitted.update(re.findall(r'\.emit\(\s*"([a-z_]+)"', source.read_text()))
    assert emitted, "no emit found: the services changed how they emit"
    assert emitted <= set(CATALOGUE)


def test_membership_events_move_their_subject_and_are_replayed_to_them() -> None:
    assert {"member_added", "member_updated", "member_removed"} == MEMBERSHIP_TYPES
    assert CATALOGUE["member_added"].rooms is Rooms.SUBJECT_JOINS
    assert CATALOGUE["member_removed"].rooms is Rooms.SUBJECT_LEAVES
    assert CATALOGUE["team_deleted"].rooms is Rooms.ROOM_CLOSES
    assert CATALOGUE["task_updated"].rooms is Rooms.TEAM


@pytest.mark.parametrize(
    ("envelope", "stale"),
    [
        (event("task_created", {"task": {"assigneeId": 7}}), StaleData(frozenset({7}))),
        (event("task_created", {"task": {"assigneeId": None}}), StaleData()),
        (
            event("task_updated", {"task": {"assigneeId": 7}, "changes": ["title"]}),
            StaleData(frozenset({7})),
        ),
        (  # reassigned: the previous assignee is not named, so every member's data
            event("task_updated", {"task": {"assigneeId": 7}, "changes": ["assigneeId"]}),
            StaleData(frozenset({7}), frozenset({9})),
        ),
        (event("task_deleted", {"taskId": 3}), StaleData(teams=frozenset({9}))),
        (event("team_updated"), StaleData(teams=frozenset({9}))),
        (event("team_deleted"), StaleData(teams=frozenset({9}))),
        (event("member_added", subject=5), StaleData(frozenset({5}))),
        (event("member_updated", subject=5), StaleData(frozenset({5}))),
        (event("member_removed", subject=5), StaleData(frozenset({5}))),
        (event("something_new"), StaleData(teams=frozenset({9}))),  # unknown: assume the worst
        (event("task_created", {"task": {"assigneeId": "7"}}), StaleData()),  # not an id
    ],
    ids=lambda value: value.type if isinstance(value, Envelope) else "",
)
def test_stale_data_follows_the_catalogue(envelope: Envelope, stale: StaleData) -> None:
    assert stale_data(envelope) == stale
