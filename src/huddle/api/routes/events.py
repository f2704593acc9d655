"""GET /api/events: the events the caller missed after an event id (SPEC §4.4 over REST).

A gateway running apart from the API (`huddle gateway` with BACKEND_URL)
replays through this route; a client that reloads after `resync_required` can
use it too.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from huddle.api.deps import CurrentActor, RuntimeDep
from huddle.api.openapi import errors
from huddle.events.items import MAX_PAGE, event_item
from huddle.services.events import EventService

router = APIRouter(prefix="/api/events", tags=["events"])


class EventsPage(BaseModel):
    """Events in id order; each is its live payload plus `type`."""

    items: list[dict[str, Any]]
    nextCursor: str | None = None
    resyncRequired: bool = False
    lastEventId: int


@router.get("", response_model=EventsPage, responses=errors(401, 422))
async def missed_events(
    actor: CurrentActor,
    runtime: RuntimeDep,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="the last event id the client has")
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")] = 100,
) -> EventsPage:
    """Events of the caller's teams, and membership events about the caller, after `after`.

    `resyncRequired`: `after` is older than the log keeps (or unknown to it);
    reload through the other routes and continue from `lastEventId`.
    `nextCursor`: more remain; pass it as `after`. Without one, the caller is
    synced through `lastEventId`.
    """
    page = await EventService(runtime.db).visible_after(actor.id, after, limit=limit)
    return EventsPage(
        items=[event_item(event) for event in page.events],
        nextCursor=str(page.last_event_id) if page.more else None,
        resyncRequired=page.resync_required,
        lastEventId=page.last_event_id,
    )
