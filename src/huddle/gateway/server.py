"""The real-time gateway as an ASGI app: python-socketio's AsyncServer and its lifecycle.

`mount_gateway(settings, role)`:
- `serve`: Socket.IO at `/socket.io/`, the web client at `/` and `/web/`
  (`huddle.web`), everything else to the REST API. The
  API's lifespan builds the Runtime; the gateway starts from it (same bus,
  token service, rate-limit store, and the in-process user-data source).
- `gateway`: no database. A small app answers `/healthz`, `/readyz` and
  `/metrics`; its lifespan builds the bus (Redis when REDIS_URL is set), a
  verify-only token service and the HTTP user-data source (BACKEND_URL).

Shutdown (SIGTERM): the gateway first refuses new sockets and tells every open
one `server_shutdown {retryAfter}` — each its own jittered delay — gives the
messages a moment to leave, and only then lets uvicorn close the connections
and run the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import httpx
import redis.asyncio as aioredis
import socketio
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from huddle import wirejson
from huddle.api.app import create_api
from huddle.api.routes.ops import metrics_response, readiness
from huddle.config import Settings
from huddle.errors import ConfigError
from huddle.events import outbox
from huddle.events.bus import EventBus, InProcessBus, RedisBus, stream_key
from huddle.events.envelope import Envelope
from huddle.gateway.engine import LeanSocketIOServer
from huddle.gateway.hub import Hub
from huddle.gateway.manager import FastManager
from huddle.gateway.namespace import GatewayNamespace
from huddle.gateway.packets import GatewayPacket
from huddle.gateway.userdata import UserDataSource
from huddle.logging import get_logger
from huddle.runtime import Runtime
from huddle.security.buckets import BucketStore
from huddle.security.ratelimit import ConnectionLimiter, create_bucket_store
from huddle.security.revocation import Revocations
from huddle.security.tokens import TokenService
from huddle.web import mount_web_client

log = get_logger("huddle.gateway")

SHUTDOWN_DRAIN = 1.0
"""Seconds between `server_shutdown` and letting the server close the sockets."""
STREAM_HEAD_PAGE, STREAM_HEAD_PAGES = 500, 20
"""How far back `_stream_head` looks for the newest logged event: 10,000 entries."""

SignalHandler = Callable[[int, FrameType | None], Any] | int | None


GC_THRESHOLD = (10_000, 20, 20)
"""First-generation allocations between collections, and the older generations' ratios."""


def _tune_gc() -> None:
    """Keep the cyclic collector from rescanning the long-lived heap a gateway holds.

    A gateway holds thousands of long-lived connection objects; with Python's
    default thresholds (700, 10, 10) every burst of short-lived allocations (a
    handshake, a fan-out) triggers collections that walk them again. Measured
    on the stock fan-out path, disabling the collector halved server CPU per
    message (docs/benchmarks.md). Freezing moves what start-up built out of
    the collector's view for good; a higher first-generation threshold makes
    collections rarer without turning them off (reference cycles are still
    reclaimed).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def mount_gateway(settings: Settings, role: str) -> ASGIApp:
    """The ASGI app of `huddle serve` (role "serve") or `huddle gateway` (role "gateway")."""
    if role == "gateway" and not settings.backend_url:
        raise ConfigError("BACKEND_URL: required for huddle gateway")
    gateway = Gateway(settings)
    if role == "serve":
        other = _serve_api(settings, gateway)
    elif role == "gateway":
        other = _gateway_app(settings, gateway)
    else:
        raise ValueError(f"unknown role {role!r}")
    sockets = socketio.ASGIApp(gateway.sio, other_asgi_app=other)
    return gateway.polls.wrap(limit_poll_bodies(sockets, settings.max_payload))


def limit_poll_bodies(app: ASGIApp, max_payload: int, path: str = "/socket.io/") -> ASGIApp:
    """Answer a long-polling POST whose body passes MAX_PAYLOAD with 413 at once (SPEC §2).

    Why here: engine.io refuses such a body but never answers the request, so
    the client waited for ever. The body (at most MAX_PAYLOAD, so bounded) is
    read first, whether it comes with a Content-Length or chunked, and handed
    to engine.io from memory.
    """

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope["path"] != path:
            await app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and (not value.isdigit() or int(value) > max_payload):
                await _too_large(send)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > max_payload:
                await _too_large(send)
                return
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await app(scope, replay, send)

    return limited


async def _too_large(send: Send) -> None:
    response = JSONResponse(
        {"error": {"code": "PAYLOAD_TOO_LARGE", "message": "The message is too large."}},
        status_code=413,
        headers={"Connection": "close"},
    )
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class LongPolls:
    """Tracks the Engine.IO long-poll GETs in flight, to answer them at shutdown.

    python-engineio (4.15) leaves a poll parked for ping interval + timeout
    (45 s) when its socket is closed with abort, which happens whenever a
    client sends CLOSE; uvicorn would then sit out its whole graceful-shutdown
    timeout. Cancelling the parked request makes engine.io answer it at once
    (its poll turns cancellation into an empty queue), so shutdown is prompt.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def wrap(self, app: ASGIApp) -> ASGIApp:
        def dispatch(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            # Not a coroutine itself: a WebSocket, open for hours, keeps no frame
            # of this wrapper alive. (Served as ASGI 3: see cli.py `interface`.)
            if scope["type"] != "http" or scope.get("method") != "GET":
                return app(scope, receive, send)
            return tracked(scope, receive, send)

        async def tracked(scope: Scope, receive: Receive, send: Send) -> None:
            task = asyncio.current_task()
            if task is None:
                await app(scope, receive, send)
                return
            self._tasks.add(task)
            if self._closing:
                # Shutting down: answer soon instead of parking for 45 s.
                asyncio.get_running_loop().call_later(0.5, task.cancel)
            try:
                await app(scope, receive, send)
            finally:
                self._tasks.discard(task)

        return dispatch

    def release(self) -> None:
        """Answer every parked poll now, and every later one after half a second."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()


def _cors(settings: Settings) -> Any:
    """CORS_ORIGIN for Socket.IO, plus the page's own origin (the web client of `huddle serve`)."""
    if "*" in settings.cors_origin:
        return "*"
    allowed = frozenset(settings.cors_origin)

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None or origin in allowed:
            return True
        host = environ.get("HTTP_HOST")
        return host is not None and origin in (f"http://{host}", f"https://{host}")

    return check


class Gateway:
    """One process's gateway: the Socket.IO server and what runs behind it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.polls = LongPolls()
        fast = settings.gateway_fanout == "fast"
        # GATEWAY_FANOUT=stock keeps python-socketio's own server, manager and
        # engine.io sockets, for comparison (docs/benchmarks.md).
        server_class = LeanSocketIOServer if fast else socketio.AsyncServer
        self.sio = server_class(
            async_mode="asgi",
            cors_allowed_origins=_cors(settings),
            max_http_buffer_size=settings.max_payload,
            ping_interval=settings.socket_ping_interval,
            ping_timeout=settings.socket_ping_timeout,
            always_connect=True,  # accept, then say what is wrong (SPEC §4.1)
            json=wirejson,  # orjson: see huddle/wirejson.py
            # What a client may send, refused as it is decoded (reserved names, binary).
            serializer=GatewayPacket,
            # Encode-once broadcasts without a task per recipient (see manager.py);
            # direct WebSocket sessions without a task per message (engine.py).
            client_manager=FastManager() if fast else None,
            # Through the standard loggers (structlog renders them), not handlers of their own.
            logger=logging.getLogger("socketio.server"),
            engineio_logger=logging.getLogger("engineio.server"),
        )
        self.hub = Hub(self.sio, settings)
        self.namespace: GatewayNamespace | None = None
        self.source: UserDataSource | None = None
        self._previous_sigterm: SignalHandler = None
        self._sigterm_installed = False

    async def start(
        self,
        *,
        bus: EventBus,
        tokens: TokenService,
        source: UserDataSource,
        buckets: BucketStore,
        head: int | None,
        revocations: Revocations | None = None,
    ) -> None:
        self.source = source
        await source.start()
        await self.hub.presence.start()
        namespace = GatewayNamespace(
            self.hub,
            self.settings,
            tokens=tokens,
            source=source,
            limiter=ConnectionLimiter(buckets, self.settings),
            revocations=revocations,
        )
        namespace.relay.head = head
        namespace.register(self.sio)
        bus.subscribe(namespace.relay.handle)
        self.namespace = namespace
        self._install_sigterm()
        _tune_gc()
        log.info("gateway_started", last_event_id=head)

    async def stop(self) -> None:
        self._restore_sigterm()
        if self.namespace is not None:
            self.namespace.relay.active = False
            self.namespace.shutting_down = True
        for session in self.hub.sessions:
            session.cancel_all()
        await self.hub.cancel_tasks()
        if self.namespace is not None:
            await self.namespace.pending.stop()
        if self.source is not None:
            await self.source.stop()
        await self.sio.shutdown()
        await self.hub.presence.stop()

    async def announce_shutdown(self) -> None:
        """`server_shutdown` to every socket, then a moment for it to leave."""
        if self.namespace is None:
            return
        told = await self.namespace.announce_shutdown()
        log.info("gateway_shutting_down", sockets=told)
        if told:
            await asyncio.sleep(SHUTDOWN_DRAIN)
        self.polls.release()

    # SIGTERM: uvicorn closes every WebSocket as soon as it handles the signal,
    # so the announcement has to happen first. Its handler runs afterwards.

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # an embedded server (tests): signals are the host's business
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            signal.signal(signal.SIGTERM, previous)  # a second SIGTERM goes straight through
            loop.call_soon_threadsafe(
                lambda: self.hub.spawn(self._shutdown_then(previous, signum, frame), "shutdown")
            )

        signal.signal(signal.SIGTERM, on_sigterm)
        self._previous_sigterm = previous
        self._sigterm_installed = True

    def _restore_sigterm(self) -> None:
        if self._sigterm_installed and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._sigterm_installed = False

    async def _shutdown_then(
        self, previous: SignalHandler, signum: int, frame: FrameType | None
    ) -> None:
        try:
            await self.announce_shutdown()
        finally:
            if callable(previous):
                previous(signum, frame)
            else:
                signal.raise_signal(signum)


# --- huddle serve -------------------------------------------------------------


def _serve_api(settings: Settings, gateway: Gateway) -> FastAPI:
    async def start(runtime: Runtime) -> None:
        from huddle.gateway.sources import create_source

        await gateway.start(
            bus=runtime.bus,
            tokens=runtime.tokens,
            source=create_source(settings, runtime),
            buckets=runtime.buckets,
            head=await _log_head(runtime),
            revocations=runtime.revocations,  # one registry with the REST side
        )

    async def stop(runtime: Runtime) -> None:
        await gateway.stop()

    app = create_api(settings, on_start=[start], on_stop=[stop])
    mount_web_client(app)  # SPEC §7: the web client is served by `huddle serve` only
    return app


async def _log_head(runtime: Runtime) -> int | None:
    """The newest event id in the log: the bus delivers only events after it."""
    try:
        async with runtime.db.read() as session:
            return await outbox.last_event_id(session)
    except Exception as exc:
        log.warning("event_log_head_unavailable", error=type(exc).__name__)
        return None


# --- huddle gateway -----------------------------------------------------------


def _gateway_app(settings: Settings, gateway: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from huddle.gateway.sources import create_source

        head = await _stream_head(settings)
        bus: EventBus
        if settings.redis_url:
            bus = RedisBus(settings.redis_url, prefix=settings.redis_prefix, last_id=head)
        else:
            bus = InProcessBus(last_id=head)
        buckets = create_bucket_store(settings)
        probe = httpx.AsyncClient(timeout=settings.backend_timeout)
        app.state.bus = bus
        app.state.probe = probe
        await bus.start()
        try:
            await gateway.start(
                bus=bus,
                tokens=TokenService(settings, can_sign=False),
                source=create_source(settings, None),
                buckets=buckets,
                head=head,
            )
            yield
        finally:
            await gateway.stop()
            await bus.stop()
            await buckets.aclose()
            await probe.aclose()

    app = FastAPI(title="Huddle gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """200 when Redis (if configured) and the backend answer; 503 naming what is down."""
        checks: dict[str, str] = {}
        if settings.redis_url:
            checks["redis"] = "ok" if request.app.state.bus.healthy else "down"
        checks["backend"] = await _backend_state(request.app.state.probe, settings.backend_url)
        return readiness(checks)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return metrics_response(request.scope, settings)

    return app


async def _backend_state(probe: httpx.AsyncClient, backend_url: str | None) -> str:
    if not backend_url:
        return "down"
    try:
        response = await probe.get(backend_url.rstrip("/") + "/healthz")
    except httpx.HTTPError:
        return "down"
    return "ok" if response.status_code == 200 else "down"


async def _stream_head(settings: Settings) -> int | None:
    """The newest event id on the Redis stream, so `lastEventId` is right from the start."""
    if not settings.redis_url:
        return None
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        # Newest first, past control messages (no id: presence, revocations).
        newest = "+"
        for _page in range(STREAM_HEAD_PAGES):
            entries: Any = await client.xrevrange(
                stream_key(settings.redis_prefix), max=newest, count=STREAM_HEAD_PAGE
            )
            for entry_id, fields in entries or []:
                raw = fields.get(b"e") or fields.get("e")
                event_id = Envelope.from_json(raw).id if raw is not None else None
                if event_id is not None:
                    return event_id
                newest = "(" + (entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
            if len(entries or []) < STREAM_HEAD_PAGE:
                break
    except (RedisError, OSError, ValueError, KeyError) as exc:
        log.warning("event_stream_head_unavailable", error=type(exc).__name__)
    finally:
        await client.aclose()
    return None
