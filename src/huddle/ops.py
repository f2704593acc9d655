"""The operations routes every role serves: `/healthz`, `/readyz`, `/metrics` (SPEC §3).

One router for `huddle serve`, `huddle api` and `huddle gateway`. What
`/readyz` checks depends on what the process runs, so the composition root
(`huddle.app`) puts the checks in `app.state.readiness`: a name per part
("database", "redis", "backend") and a coroutine answering whether it is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from huddle.config import Settings
from huddle.errors import HuddleError
from huddle.schemas import Error, ErrorInfo
from huddle.security.metrics_access import authorize_metrics

Probe = Callable[[], Awaitable[bool]]
"""Answers whether one part is up; raising counts as down."""

PROBE_TIMEOUT = 2.0
"""Seconds a readiness probe may take before its part counts as down."""

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    """`checks`: each part, "ok" or "down"; `error` names what is down (503)."""

    status: str
    checks: dict[str, str]
    error: ErrorInfo | None = None


@router.get("/healthz", summary="Liveness", response_model=Health)
async def healthz() -> dict[str, str]:
    """200 `{"status": "ok"}` while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=None,
    responses={
        200: {"model": Readiness, "description": "Every part answers."},
        503: {"model": Readiness, "description": "A part is down (`NOT_READY`)."},
    },
)
async def readyz(request: Request) -> JSONResponse:
    """200 when every part this process needs answers; 503 naming what is down."""
    probes: Mapping[str, Probe] = getattr(request.app.state, "readiness", {})
    names = list(probes)
    results = await asyncio.gather(*(_check(probes[name]) for name in names))
    return readiness(dict(zip(names, results, strict=True)))


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        401: {"model": Error, "description": "Production, METRICS_TOKEN set: no or a wrong token."},
        403: {"model": Error, "description": "Production, no METRICS_TOKEN: not from this host."},
    },
)
async def metrics(request: Request) -> Response:
    """Every collector of `huddle.metrics`, in Prometheus' text format.

    In production only with `Authorization: Bearer <METRICS_TOKEN>`, or, without
    a token configured, from this host (`security/metrics_access.py`).
    """
    settings: Settings = request.app.state.settings
    return metrics_response(request.scope, settings)


def metrics_response(scope: Mapping[str, Any], settings: Settings) -> Response:
    """The /metrics answer: the metrics, or the error body that refuses them."""
    try:
        authorize_metrics(scope, settings)
    except HuddleError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


_lingering: set[asyncio.Task[bool]] = set()
"""Probes that outlived their timeout, kept referenced until they end on their own."""


async def _check(probe: Probe) -> str:
    """ "ok" or "down" within PROBE_TIMEOUT.

    A probe past its timeout is left to finish rather than cancelled: cancelling
    a database check stuck on a connection whose packets are dropped makes the
    driver close that connection gracefully, which waits as long again (/readyz
    took 4 s instead of 2 in the fault matrix). Each probe is bounded by the
    driver's own timeouts, so the tasks left behind do not pile up.
    """
    task = asyncio.ensure_future(probe())
    done, _ = await asyncio.wait({task}, timeout=PROBE_TIMEOUT)
    if not done:
        _lingering.add(task)
        task.add_done_callback(_forget)
        return "down"
    try:
        return "ok" if task.result() else "down"
    except Exception:
        return "down"


def _forget(task: asyncio.Task[bool]) -> None:
    _lingering.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


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
