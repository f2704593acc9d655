"""Request id, access log and HTTP metrics, as pure ASGI middleware (no body buffering)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from huddle.api.errors import error_response
from huddle.errors import DatabaseUnavailable, HuddleError, InternalError
from huddle.logging import get_logger
from huddle.metrics import HTTP_LATENCY, HTTP_REQUESTS
from huddle.security.client_ip import client_ip
from huddle.services.unit import is_unavailable

log = get_logger("huddle.http")

IPNetwork = IPv4Network | IPv6Network


class RequestContext:
    """Gives each request an id (kept from `X-Request-ID` when sane) and times it."""

    def __init__(self, app: ASGIApp, trusted: Iterable[IPNetwork] = ()) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else None
        request_id = request_id or uuid.uuid4().hex
        ip = client_ip(scope, self.trusted)
        structlog.contextvars.bind_contextvars(request_id=request_id, client_ip=ip)
        started = time.perf_counter()
        status = 500
        started_response = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Handled here rather than by Starlette's outermost middleware, so the
            # log line keeps the request id and the response carries it too.
            if started_response:
                raise
            await _fallback(exc, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            if not template.startswith("/socket.io"):
                HTTP_REQUESTS.labels(method, template, str(status)).inc()
                HTTP_LATENCY.labels(method, template).observe(elapsed)
                log.info(
                    "http_request",
                    method=method,
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id", "client_ip")


async def _fallback(exc: Exception, send: Send) -> None:
    failure: HuddleError
    if is_unavailable(exc):
        log.warning("database_unavailable", error=type(exc).__name__)
        failure = DatabaseUnavailable()
    else:
        log.exception("unhandled_error")
        failure = InternalError()
    response = error_response(failure)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
