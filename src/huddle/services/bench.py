"""Benchmark broadcasts: synthetic task events through the real outbox, bus and fan-out.

Only `POST /bench/broadcast` (enabled by BENCH_ENDPOINTS, see
`huddle.api.routes.bench`) calls this. Each event is its own unit of work,
as a REST edit would be: the event row and its id are written in a
transaction, and after the commit the bus hands it to every subscriber (the
gateway's relay, which emits it to `team:<id>`). With the in-process bus the
call returns once every event has been handed to the sockets' queues, as the
Node peer's trigger does.

The payload is that of a `task_updated` (SPEC §4.3) plus `sentAt`, epoch
milliseconds taken just before the event's transaction opens, so a receiver's
latency covers the whole path: outbox write, commit, publish, fan-out, wire.
No task row is touched: the events name a task that need not exist.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from huddle.clock import iso, utcnow
from huddle.errors import BadRequest
from huddle.services.unit import Database

BENCH_EVENT = "task_updated"
BENCH_TASK_ID = 424_242
MAX_COUNT = 10_000
MAX_SIZE = 65_536
_CREATED_AT = "2026-01-01T00:00:00.000Z"


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """What one trigger call did; `emitMs` is the wall time from the first write to the last."""

    team_id: int
    count: int
    frame_bytes: int
    first_event_id: int
    last_event_id: int
    emit_ms: float

    def wire(self) -> dict[str, Any]:
        return {
            "room": f"team:{self.team_id}",
            "event": BENCH_EVENT,
            "count": self.count,
            "frameBytes": self.frame_bytes,
            "recipients": None,  # the API does not see the gateway's rooms
            "firstEventId": self.first_event_id,
            "lastEventId": self.last_event_id,
            "emitMs": round(self.emit_ms, 3),
        }


def _task(team_id: int, version: int, description: str, updated_at: str) -> dict[str, Any]:
    """A full Task entity as events carry it (the shape of `TaskOut`)."""
    return {
        "id": BENCH_TASK_ID,
        "teamId": team_id,
        "title": "Benchmark task",
        "description": description,
        "status": "in_progress" if version % 2 == 0 else "done",
        "priority": "high",
        "assigneeId": 1,
        "dueDate": None,
        "createdBy": 1,
        "createdAt": _CREATED_AT,
        "updatedAt": updated_at,
        "version": version,
    }


def frame_bytes(team_id: int, description: str, event_id: int = 1) -> int:
    """Length of the Socket.IO frame `42["task_updated",{…}]` for one bench event."""
    now = iso(utcnow())
    payload = {
        "eventId": event_id,
        "teamId": team_id,
        "task": _task(team_id, event_id, description, now or ""),
        "changes": ["status"],
        "sentAt": int(time.time() * 1000),
        "actorId": 1,
        "timestamp": now,
    }
    return len("42" + json.dumps([BENCH_EVENT, payload], separators=(",", ":")))


class BenchService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def broadcast(self, team_id: int, count: int, size: int) -> BroadcastResult:
        """Write and publish `count` task_updated events for `team_id`, frames of ~`size` bytes.

        Frames cannot be smaller than a full task makes them (~430 bytes);
        `size` below that gives the smallest frame.
        """
        if not 1 <= count <= MAX_COUNT:
            raise BadRequest(f"count must be between 1 and {MAX_COUNT}.")
        if not 0 <= size <= MAX_SIZE:
            raise BadRequest(f"size must be between 0 and {MAX_SIZE}.")
        bare = frame_bytes(team_id, "")
        description = "x" * max(0, size - bare)
        first: int | None = None
        last = 0
        started = time.perf_counter()
        for index in range(count):
            sent_at = int(time.time() * 1000)
            async with self._db.unit() as unit:
                # Status and version change with each event, as they would in real edits.
                stamp = iso(utcnow()) or ""
                await unit.emit(
                    BENCH_EVENT,
                    team_id=team_id,
                    actor_id=1,
                    body={
                        "task": _task(team_id, index + 1, description, stamp),
                        "changes": ["status"],
                        "sentAt": sent_at,
                    },
                )
            event_id = unit.events[0].id or 0
            first = event_id if first is None else first
            last = event_id
        emit_ms = (time.perf_counter() - started) * 1000
        return BroadcastResult(
            team_id=team_id,
            count=count,
            frame_bytes=bare + len(description),
            first_event_id=first or 0,
            last_event_id=last,
            emit_ms=emit_ms,
        )
