"""The shape an event travels in between the outbox, the bus and the gateway."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event. `id` is the outbox id; control messages (no log entry) have id None.

    `payload` is exactly what goes on the wire (camelCase, with eventId and
    timestamp). `subject_user_id` names the user a membership event is about.
    """

    type: str
    payload: dict[str, Any]
    id: int | None = None
    team_id: int | None = None
    subject_user_id: int | None = None
    actor_id: int | None = None
    # Cached JSON of the payload, so a fan-out encodes it once.
    _json: list[str] = field(default_factory=list, compare=False, repr=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "teamId": self.team_id,
                "subjectUserId": self.subject_user_id,
                "actorId": self.actor_id,
                "payload": self.payload,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        data = json.loads(raw)
        return cls(
            type=str(data["type"]),
            payload=dict(data["payload"]),
            id=None if data.get("id") is None else int(data["id"]),
            team_id=None if data.get("teamId") is None else int(data["teamId"]),
            subject_user_id=(
                None if data.get("subjectUserId") is None else int(data["subjectUserId"])
            ),
            actor_id=None if data.get("actorId") is None else int(data["actorId"]),
        )


# Control message types: not in the event log, never replayed.
SESSIONS_REVOKED = "sessions_revoked"
"""`{userId, revokedAt}`: every token of the user issued before `revokedAt` is revoked."""
FAMILY_REVOKED = "family_revoked"
"""`{userId, familyId, revokedAt}`: every token of one refresh family (one login) is revoked."""
PRESENCE_CHANGED = "presence_changed"
"""`{userId, online, teamIds}`: a cluster-wide presence transition; written by the
Redis presence store's scripts, emitted by every gateway as one `presence_changed`
per team."""
