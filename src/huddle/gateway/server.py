"""Placeholder until the gateway lands: serves the API alone."""

from __future__ import annotations

from starlette.types import ASGIApp

from huddle.api.app import create_api
from huddle.config import Settings


def mount_gateway(settings: Settings, role: str) -> ASGIApp:
    return create_api(settings)
