"""An event as `GET /api/events` lists it (its wire payload plus `type`), and back.

The REST replay route writes items; a gateway whose user data comes over HTTP
(`huddle gateway`) reads them back into envelopes.
"""

from __future__ import annotations

from typing import Any

from huddle.events.envelope import Envelope
from huddle.events.types import MEMBERSHIP_TYPES

MAX_PAGE = 1000
"""The most events one replay call returns (REST `limit` maximum and the gateway's page)."""


def event_item(event: Envelope) -> dict[str, Any]:
    """An event as `GET /api/events` lists it: its wire payload plus `type`."""
    return {"type": event.type, **event.payload}


def envelope_of_item(item: dict[str, Any]) -> Envelope:
    """The envelope back from an `event_item` (what the HTTP source receives).

    Raises KeyError, TypeError or ValueError when the item is not one.
    """
    payload = {key: value for key, value in item.items() if key != "type"}
    type_ = str(item["type"])
    subject: int | None = None
    if type_ in MEMBERSHIP_TYPES:
        user = payload.get("user")
        raw = user.get("id") if isinstance(user, dict) else payload.get("userId")
        subject = None if raw is None else int(raw)
    actor = payload.get("actorId")
    team = payload.get("teamId")
    return Envelope(
        type=type_,
        payload=payload,
        id=int(payload["eventId"]),
        team_id=None if team is None else int(team),
        subject_user_id=subject,
        actor_id=None if actor is None else int(actor),
    )
