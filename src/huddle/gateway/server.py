"""The real-time gateway: python-socketio's AsyncServer, its ASGI app and its lifecycle.

`Gateway(settings)` builds the Socket.IO server (with the accel modules'
classes when they run, python-socketio's own otherwise); `asgi(other)` puts
it at `/socket.io/` in front of another ASGI app (the REST API under `huddle
serve`, the operations routes under `huddle gateway`); `start(...)` wires it
to what the composition root (`huddle.app`) built: the bus, the token
service, the user-data source and the rate-limit store.

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
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import socketio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from huddle import accel, wirejson
from huddle.config import Settings
from huddle.events.bus import EventBus
from huddle.gateway.namespace import GatewayNamespace
from huddle.gateway.packets import GatewayPacket
from huddle.gateway.realtime.hub import Hub
from huddle.gateway.sources.base import UserDataSource
from huddle.logging import get_logger
from huddle.security.buckets import BucketStore
from huddle.security.ratelimit import ConnectionLimiter
from huddle.security.revocation import Revocations
from huddle.security.tokens import TokenService

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
    handshake, a fan-out) triggers collections that walk them again
    (docs/benchmarks.md has the figures). Freezing moves what start-up built out of
    the collector's view for good; a higher first-generation threshold makes
    collections rarer without turning them off (reference cycles are still
    reclaimed).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def limit_poll_bodies(
    app: ASGIApp,
    max_payload: int,
    path: str = "/socket.io/",
    closed: Callable[[str], bool] = lambda sid: False,
) -> ASGIApp:
    """Answer a long-polling POST whose body passes MAX_PAYLOAD with 413 at once (SPEC §2),
    and one for a session engine.io has closed with 400.

    Why here: engine.io refuses such a body but never answers the request, so
    the client waited for ever. The body (at most MAX_PAYLOAD, so bounded) is
    read first, whether it comes with a Content-Length or chunked, and handed
    to engine.io from memory. A POST that races its session's closing (the
    session is closed but not yet forgotten) raised KeyError inside
    python-engineio (4.15): a 500 and a traceback in the log; engine.io
    answers an unknown session with 400, and so does this (`closed(sid)`).
    """

    def dispatch(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a WebSocket, open for hours, keeps no frame of
        # this wrapper alive (each kept frame is memory per connection).
        if scope["type"] != "http" or scope.get("method") != "POST" or scope["path"] != path:
            return app(scope, receive, send)
        return limited(scope, receive, send)

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        sid = _query_sid(scope.get("query_string") or b"")
        if sid is not None and closed(sid):
            await _session_closed(send)
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

    return dispatch


ENGINE_PACKET_TYPES = frozenset("0123456")


def refuse_junk_frames(app: ASGIApp) -> ASGIApp:
    """End a WebSocket whose client sends a text frame that is no Engine.IO packet.

    Why here: python-engineio's own WebSocket handler parses each frame without a
    guard, so a frame like `x` raised out of it, left the session registered
    until its ping timeout, and logged a traceback. Node's engine.io closes the
    connection on a parse error; so does this, by handing engine.io the end of
    the WebSocket instead of the frame (a close frame goes to the client).
    Sessions served by the engineio accel module read their frames themselves
    and make the same check.
    """

    def guarded(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself, so that no frame of it stays alive per WebSocket.
        if scope["type"] != "websocket":
            return app(scope, receive, send)
        return app(scope, _CheckedReceive(receive, send), send)

    return guarded


class _CheckedReceive:
    """`receive` for `refuse_junk_frames`: a slotted object rather than a closure,
    since every WebSocket holds one for its whole life (48 bytes, not ~350)."""

    __slots__ = ("_receive", "_send")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None and text[:1] not in ENGINE_PACKET_TYPES:
                with contextlib.suppress(Exception):
                    await self._send({"type": "websocket.close", "code": 1002})
                return {"type": "websocket.disconnect", "code": 1002}
        return message


def _query_sid(query: bytes) -> str | None:
    for pair in query.split(b"&"):
        if pair.startswith(b"sid="):
            return pair[4:].decode("latin-1")
    return None


async def _session_closed(send: Send) -> None:
    # The answer engine.io gives a POST for a session it does not know.
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b'"Invalid session"'})


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
        speed = accel.load(settings.accel)
        server_class: type[socketio.AsyncServer] = socketio.AsyncServer
        manager: Any = None
        if speed.engineio:  # direct WebSocket sessions without a task per message
            from huddle.accel.engineio import LeanSocketIOServer

            server_class = LeanSocketIOServer
        if speed.socketio:  # encode-once broadcasts without a task per recipient
            from huddle.accel.socketio import FastManager

            manager = FastManager()
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
            client_manager=manager,
            # Through the standard loggers (structlog renders them), not handlers of their own.
            logger=logging.getLogger("socketio.server"),
            engineio_logger=logging.getLogger("engineio.server"),
        )
        self.hub = Hub(self.sio, settings)
        self.namespace: GatewayNamespace | None = None
        self.source: UserDataSource | None = None
        self._previous_sigterm: SignalHandler = None
        self._sigterm_installed = False

    def asgi(self, other: ASGIApp) -> ASGIApp:
        """Socket.IO at `/socket.io/`, everything else to `other`."""
        sockets = socketio.ASGIApp(self.sio, other_asgi_app=other)
        eio = self.sio.eio

        def closed(sid: str) -> bool:
            socket = eio.sockets.get(sid)
            return socket is not None and bool(socket.closed)

        guarded = refuse_junk_frames(
            limit_poll_bodies(sockets, self.settings.max_payload, closed=closed)
        )
        return self.polls.wrap(guarded)

    async def start(
        self,
        *,
        bus: EventBus,
        tokens: TokenService,
        source: UserDataSource,
        buckets: BucketStore,
        revocations: Revocations | None = None,
    ) -> None:
        """Serve from `bus` (whose head is the newest event id this gateway starts from)."""
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
        namespace.relay.head = bus.head or 0
        namespace.register(self.sio)
        bus.subscribe(namespace.relay.handle)
        self.namespace = namespace
        self._install_sigterm()
        _tune_gc()
        log.info("gateway_started", last_event_id=namespace.relay.head)

    async def stop(self) -> None:
        self._restore_sigterm()
        if self.namespace is not None:
            self.namespace.relay.active = False
            self.namespace.shutting_down = True
            self.namespace.auth.deadlines.close()
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
