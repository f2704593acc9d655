"""The operations routes every role serves: `/healthz`, `/readyz`, `/metrics` (SPEC §3).

One router for `huddle serve`, `huddle api` and `huddle gateway`. What
`/readyz` checks depends on what the process runs, so the composition root
(`huddle.app`) puts the checks in `app.state.readiness`: a name per part
("database", "redis", "backend") and a coroutine answering whether it is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Probe = Callable[[], Awaitable[bool]]
"""Answers whether one part is up; raising counts as down."""

PROBE_TIMEOUT = 2.0
"""Seconds a readiness probe may take before its part counts as down."""

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """200 `{"status": "ok"}` while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness")
async def readyz(request: Request) -> JSONResponse:
    """200 when every part this process needs answers; 503 naming what is down."""
    probes: Mapping[str, Probe] = getattr(request.app.state, "readiness", {})
    names = list(probes)
    results = await asyncio.gather(*(_check(probes[name]) for name in names))
    return readiness(dict(zip(names, results, strict=True)))


@router.get("/metrics", summary="Prometheus metrics")
async def metrics() -> Response:
    """Every collector of `huddle.metrics`, in Prometheus' text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _check(probe: Probe) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            return "ok" if await probe() else "down"
    except Exception:
        return "down"


def readiness(checks: dict[str, str]) -> JSONResponse:
    """The /readyz answer for `checks` (part -> "ok"/"down"): 200, or 503 naming what is down."""
    down = sorted(name for name, state in checks.items() if state != "ok")
    if down:
        body = {
            "status": "unavailable",
            "checks": checks,
            "error": {
                "code": "NOT_READY",
                "message": f"Unavailable: {', '.join(down)}.",
                "details": {"down": down},
            },
        }
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ok", "checks": checks})
