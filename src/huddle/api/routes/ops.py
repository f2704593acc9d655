"""GET /healthz (alive), /readyz (dependencies reachable), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from huddle.api.deps import RuntimeDep
from huddle.api.errors import error_response
from huddle.api.openapi import ErrorInfo, errors
from huddle.config import Settings
from huddle.errors import HuddleError
from huddle.security.metrics_access import authorize_metrics

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    """`checks`: each dependency, "ok" or "down"; `error` names what is down (503)."""

    status: str
    checks: dict[str, str]
    error: ErrorInfo | None = None


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is alive (nothing else is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=None,
    responses={
        200: {"model": Readiness, "description": "Every dependency answers."},
        503: {"model": Readiness, "description": "A dependency is down (`NOT_READY`)."},
    },
)
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


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **errors(401, 403),
    },
)
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
