"""GET /healthz (alive), /readyz (dependencies reachable), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from huddle.api.deps import RuntimeDep
from huddle.api.errors import error_response
from huddle.config import Settings
from huddle.errors import HuddleError
from huddle.security.metrics_access import authorize_metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """200 when every dependency answers; 503 naming what is down."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with runtime.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "down"
    if runtime.settings.redis_url:
        checks["redis"] = "ok" if await runtime.redis_ok() else "down"
    return readiness(checks)


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


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics; in production only with METRICS_TOKEN or from this host."""
    settings: Settings = request.app.state.settings
    return metrics_response(request.scope, settings)


def metrics_response(scope: Mapping[str, Any], settings: Settings) -> Response:
    """The /metrics answer of any Huddle app: the metrics, or the error that refuses them."""
    try:
        authorize_metrics(scope, settings)
    except HuddleError as exc:
        return error_response(exc)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
