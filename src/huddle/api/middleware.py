"""Request id, access log, HTTP metrics and the body-size limit, as pure ASGI middleware.

None of them buffers a body.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from huddle.api.errors import error_response
from huddle.errors import DatabaseUnavailable, HuddleError, InternalError, PayloadTooLarge
from huddle.logging import get_logger, log_enabled
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
        incoming = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else None
        request_id = request_id or uuid.uuid4().hex
        ip = client_ip(scope, self.trusted)
        structlog.contextvars.bind_contextvars(request_id=request_id, client_ip=ip)
        started = time.perf_counter()
        status = 500
        started_response = False
        root_path = scope.get("root_path", "")

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
            template = route_name(scope, root_path)
            method = scope["method"]
            if not template.startswith("/socket.io"):
                _count(method, template, status, elapsed)
                if log_enabled(logging.INFO):
                    log.info(
                        "http_request",
                        method=method,
                        route=template,
                        status=status,
                        duration_ms=round(elapsed * 1000, 2),
                    )
            structlog.contextvars.unbind_contextvars("request_id", "client_ip")


_requests: dict[tuple[str, str, int], Any] = {}
_latencies: dict[tuple[str, str], Any] = {}


def _count(method: str, route: str, status: int, elapsed: float) -> None:
    """One request in `huddle_http_requests_total` and its latency histogram.

    Each label set's child is looked up once (prometheus_client's `labels()`
    takes a lock and checks the labels on every call) and kept, as Prometheus
    itself keeps it; the sets are the routes' templates, so they stay few.
    """
    counter = _requests.get((method, route, status))
    if counter is None:
        counter = _requests[method, route, status] = HTTP_REQUESTS.labels(
            method, route, str(status)
        )
    counter.inc()
    histogram = _latencies.get((method, route))
    if histogram is None:
        histogram = _latencies[method, route] = HTTP_LATENCY.labels(method, route)
    histogram.observe(elapsed)


def route_name(scope: Scope, root_path: str = "") -> str:
    """The route a request matched, as logged and in metrics: its path template.

    A route sets `scope["route"]`; a mounted app (the web client's and /docs'
    static files) does not under FastAPI's router, but moves the scope's
    `root_path` to its prefix, which names it: `/web/{path}`. `root_path` is the
    scope's value before routing. Anything else is "unmatched" (a 404).
    """
    template = getattr(scope.get("route"), "path", None)
    if template:
        return str(template)
    mounted = scope.get("root_path", "")
    if isinstance(mounted, str) and mounted != root_path and mounted.startswith(root_path):
        return mounted[len(root_path) :] + "/{path}"
    return "unmatched"


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


class BodyLimit:
    """REST request bodies above `max_body` bytes answer 413 PAYLOAD_TOO_LARGE unread.

    A `Content-Length` above the limit is refused before the app runs; a body
    without one (chunked) is counted as it streams in, and the read that
    crosses the limit fails, so at most `max_body` bytes plus one chunk are
    ever held. Whatever the app then answers (FastAPI turns a failed body read
    into a 400 of its own) is replaced by the 413. The connection is not closed
    at once: uvicorn discards the rest of the body as it arrives, without
    holding it, so that a client that writes its whole body before reading
    (most do) gets the 413 rather than a reset; its keep-alive timeout (5 s)
    ends a body that goes on longer than that.

    Hand-written rather than Starlette's `RequestBodyLimitMiddleware` (1.x):
    that one acts only when a route reads the body, answers in plain text, and
    keeps the connection open to drain the upload.

    `/socket.io/` is not covered: the gateway limits its messages with MAX_PAYLOAD.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/socket.io/"):
            await self.app(scope, receive, send)
            return
        limit = self.max_body
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _TooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # The app's own answer to the failed read is replaced by the 413.
                if not started and message["type"] == "http.response.start":
                    started = True
                    await _too_large(send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


class _TooLarge(PayloadTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than {limit} bytes (MAX_BODY).",
            details={"maxBody": limit},
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before we see it
    return None


async def _too_large(send: Send, limit: int) -> None:
    response = error_response(_TooLarge(limit))
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
