"""POST /bench/broadcast: the benchmark's trigger (bench/, SPEC §8). Only with BENCH_ENDPOINTS.

The same call as the Node peer's (`bench/peer/server.js`), so the load
generator drives both servers alike:

    POST /bench/broadcast?room=team:1&count=50&size=300[&event=task_updated]

writes `count` `task_updated` events for the team through the outbox, the
bus and the gateway (`huddle.services.bench`), and answers once they are
handed to the sockets. The router is mounted only when BENCH_ENDPOINTS is
true (refused in production), and answers only loopback clients.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from huddle.api.deps import ClientAddr, RuntimeDep
from huddle.errors import BadRequest, Forbidden
from huddle.services.bench import BENCH_EVENT, MAX_COUNT, MAX_SIZE, BenchService

router = APIRouter(prefix="/bench", tags=["benchmark"], include_in_schema=False)


@router.post("/broadcast")
async def broadcast(
    runtime: RuntimeDep,
    client: ClientAddr,
    room: Annotated[str, Query(pattern=r"^team:[1-9][0-9]{0,9}$")] = "team:1",
    count: Annotated[int, Query(ge=1, le=MAX_COUNT)] = 1,
    size: Annotated[int, Query(ge=0, le=MAX_SIZE)] = 300,
    event: Annotated[str, Query(max_length=64)] = BENCH_EVENT,
) -> dict[str, Any]:
    """Emit `count` task events to a team's room; answers when they are queued."""
    if not client.localhost:
        raise Forbidden("Benchmark endpoints answer loopback clients only.")
    if event != BENCH_EVENT:
        raise BadRequest(f"Only {BENCH_EVENT} events are benchmarked.")
    team_id = int(room.removeprefix("team:"))
    if team_id > 2**31 - 1:
        raise BadRequest("No such team.")
    result = await BenchService(runtime.db).broadcast(team_id, count, size)
    return result.wire()
