"""build_app(settings, role): the ASGI application each command serves."""

from __future__ import annotations

from typing import Literal

from starlette.types import ASGIApp

from huddle.api.app import create_api
from huddle.config import Settings

Role = Literal["serve", "api", "gateway"]


def build_app(settings: Settings, role: Role = "serve") -> ASGIApp:
    """`serve`: REST API and gateway in one process; `api`: REST only; `gateway`: sockets only."""
    if role == "api":
        return create_api(settings)
    from huddle.gateway.server import mount_gateway

    return mount_gateway(settings, role)
