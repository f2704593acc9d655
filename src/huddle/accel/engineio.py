"""python-engineio: a lean Engine.IO socket for clients that connect over WebSocket directly.

Why: python-engineio serves a WebSocket session with five asyncio tasks for
as long as it is open — the ASGI task reading, one more task per received
message (`ensure_future` + `wait_for`), a writer task fed by an
`asyncio.Queue` (whose `wait_for(queue.get())` is another task), and a task
sleeping until the next ping: a third of Huddle's memory per idle connection
and several task switches per handshake. engine.io's protocol logic (packets,
`receive`, `close`, ping timeouts checked by the server's service task) is
kept; what changes is how a *direct* WebSocket session moves bytes.

Overrides:

1. `LeanSocket` (subclass of `engineio.async_socket.AsyncSocket`): `send`
   writes a packet synchronously to its connection (the uvicorn module's
   `send_now`: no queue, no writer task, order shared with broadcast
   frames); `serve` reads the connection's queue in the ASGI task (no task
   per message); the next ping is a loop timer (`schedule_ping`); `close`
   closes the WebSocket after the CLOSE packet (there is no writer to do it).
   `_NoQueue` stands in for the socket's queue.
2. `LeanEngineServer.handle_request` (subclass of `engineio.AsyncServer`):
   an Engine.IO 4 opening over WebSocket with no session id, on one of the
   uvicorn module's connections, is served here (`_serve_direct`), making
   engine.io's own checks first (origin, version, transport); everything
   else goes to engine.io. engine.io's request coroutine would otherwise
   stay on the stack for the whole session with its locals.
3. `translate_request` replaces the ASGI driver's (through the private
   `_async` driver table): the driver defines its body-reader class inside
   the function, a new class per request.
4. `LeanSocketIOServer` (subclass of `socketio.AsyncServer`): its private
   `_engineio_server_class` answers `LeanEngineServer`, and `handle_request`
   hands back engine.io's coroutine (one frame fewer per open WebSocket).
5. `LeanEngineServer.generate_id`: engine.io's session id, the same 12
   random bytes and 3-byte sequence number in the same URL-safe base64, with
   the random bytes taken from `os.urandom` `ID_POOL` ids at a time: one
   `getrandom` system call per 256 ids instead of one per id, and a
   handshake takes two (the Engine.IO session's, the Socket.IO connection's).

Private names used: `AsyncServer._async`, `_make_response`, `_bad_request`,
`_unauthorized`, `_cors_allowed_origins`, `_log_error_once`,
`_trigger_event`, `_service_task`, `start_service_task`,
`service_task_handle`, `sequence_number`; the socket's `queue`, `last_ping`, `connected`,
`upgraded`, `closing`, `closed`, `check_ping_timeout`, `receive`;
`socketio.AsyncServer._engineio_server_class`.

Sessions that start with long-polling (and may upgrade) keep
python-engineio's own socket. Needs the uvicorn module (its connections).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any
from urllib.parse import parse_qs

import engineio
import socketio
from engineio import async_socket, exceptions
from engineio import packet as eio_packet

from huddle.accel import Gate, Tested
from huddle.accel.uvicorn import FastWebSocketProtocol, connection_of

GATE = Gate(
    (
        Tested("python-engineio", "engineio", ("4.15.1",)),
        Tested("python-socketio", "socketio", ("5.18.1",)),
    ),
    needs=("uvicorn",),
)

ID_RANDOM_BYTES = 12
"""Random bytes in an Engine.IO session id, as engine.io's `generate_id` takes them."""
ID_POOL = 256
"""Session ids' worth of random bytes read from `os.urandom` at a time (override 5)."""

_PING = eio_packet.Packet(eio_packet.PING)
_PACKET_TYPES = len(eio_packet.packet_names)


class _NoQueue:
    """Stands in for the engine.io socket's queue, which a `LeanSocket` never uses.

    Engine.IO code and `FastManager` still ask it whether it is empty or wait
    for it to drain; it always is. (An `asyncio.Queue` per idle socket costs
    three deques.)
    """

    __slots__ = ()

    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        return None

    def get_nowait(self) -> Any:
        raise asyncio.QueueEmpty

    def put_nowait(self, item: Any) -> None:
        raise RuntimeError("a LeanSocket writes directly; nothing may be queued")

    async def put(self, item: Any) -> None:
        self.put_nowait(item)


_NO_QUEUE = _NoQueue()


class LeanSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    """An engine.io socket that writes straight to its WebSocket connection."""

    # engine.io's own attributes (untyped there), as this class uses them
    last_ping: float | None
    connected: bool
    closing: bool
    closed: bool

    def __init__(self, server: Any, sid: str) -> None:
        super().__init__(server, sid)
        self.queue = _NO_QUEUE
        self._early: list[eio_packet.Packet] | None = []
        """Packets sent before the WebSocket was accepted (the OPEN packet)."""
        self.connection: FastWebSocketProtocol | None = None
        """The connection, once the WebSocket is accepted and `serve` runs."""
        self._ping_timer: asyncio.TimerHandle | None = None

    # --- writing ------------------------------------------------------------

    async def send(self, pkt: eio_packet.Packet) -> None:
        connection = self.connection
        if connection is None:
            if self._early is not None:  # not attached yet: written when it is
                self._early.append(pkt)
            return
        if not await self.check_ping_timeout():
            return
        self._write(connection, pkt)

    def _write(self, connection: FastWebSocketProtocol, pkt: eio_packet.Packet) -> None:
        connection.send_now(pkt.encode())

    # --- pings ----------------------------------------------------------------

    def schedule_ping(self) -> None:
        # As engine.io does: a new ping only once the previous one was answered.
        if self.last_ping:
            self.last_ping = None
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(self.server.ping_interval, self._ping_due)

    def _ping_due(self) -> None:
        self._ping_timer = None
        if self.closing or self.closed:
            return
        self.last_ping = time.time()
        if self.connection is not None:
            self._write(self.connection, _PING)
        else:  # pragma: no cover - attached long before the first ping is due
            self.server.start_background_task(self.send, _PING)

    # --- closing --------------------------------------------------------------

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        was_open = not self.closed and not self.closing
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        await super().close(wait=wait, abort=abort, reason=reason)
        connection = self.connection
        if was_open and not abort and connection is not None:
            # engine.io's writer closed the WebSocket after the CLOSE packet;
            # there is no writer here, so close it now (uvicorn drops the TCP
            # connection if the peer does not answer the close frame).
            await connection.close_now()

    # --- the WebSocket session ---------------------------------------------------

    def _write_early(self, connection: FastWebSocketProtocol) -> None:
        # (A method of its own, so that no local of `serve` keeps the packets alive.)
        early, self._early = self._early, None
        for pkt in early or ():
            self._write(connection, pkt)

    async def serve(self, connection: FastWebSocketProtocol) -> None:
        """Read the session's messages until the WebSocket closes (runs in the ASGI task).

        Reads the connection's queue directly, as uvicorn's `receive` would
        (resuming a paused transport once the queue is drained), so an idle
        session waits in one coroutine chain and no task.
        """
        self.connected = True
        self.upgraded = True
        self.connection = connection
        connection.attach(self.sid)
        self._write_early(connection)
        limit = self.server.max_http_buffer_size
        queue = connection.queue
        while True:
            try:
                message = await queue.get()
            except asyncio.CancelledError:  # server shutdown: close as a lost transport
                break
            if connection.read_paused and queue.empty():
                connection.read_paused = False
                connection.transport.resume_reading()
            if message["type"] != "websocket.receive":
                break
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None or len(data) > limit:
                break
            try:
                packet = eio_packet.Packet(encoded_packet=data)
            except (ValueError, TypeError):
                packet = None
            if packet is None or not 0 <= packet.packet_type < _PACKET_TYPES:
                # Not Engine.IO: the session ends, as Node's engine.io ends it
                # on a parse error (engine.io's `receive` would raise IndexError).
                self.server.logger.warning("%s: unreadable Engine.IO packet", self.sid)
                break
            try:
                await self.receive(packet)
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                break
            except Exception:  # a bad packet must not end the server's task silently
                self.server.logger.exception("%s: receive error", self.sid)
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        await connection.close_now()


class _Body:
    """The request body as engine.io reads it (`environ["wsgi.input"].read(n)`)."""

    __slots__ = ("_event", "_payload", "_receive")

    def __init__(self, event: dict[str, Any], receive: Any) -> None:
        self._event = event
        self._receive = receive
        self._payload: bytes | None = None

    async def read(self, length: int | None = None) -> bytes:
        if self._payload is None:
            payload = self._event.get("body") or b""
            event = self._event
            while event.get("more_body"):
                event = await self._receive()
                if event["type"] != "http.request":
                    break
                if length is None or len(payload) < length:
                    payload += event.get("body") or b""
            self._payload = payload
        if length is None:
            data, self._payload = self._payload, b""
        else:
            data, self._payload = self._payload[:length], self._payload[length:]
        return data


async def translate_request(scope: dict[str, Any], receive: Any, send: Any) -> dict[str, Any]:
    """The WSGI-style environ engine.io reads, from an ASGI request.

    Why not python-engineio's own (`async_drivers.asgi.translate_request`):
    it defines its body-reader class inside the function, so every request —
    each handshake and each long-poll — builds a new class, held for as long
    as the session keeps its environ. This one
    gives engine.io and python-socketio the same keys. REMOTE_ADDR is the
    ASGI peer rather than engine.io's fixed `127.0.0.1` (Huddle itself reads
    the client address from `asgi.scope`, see security/client_ip.py).
    """
    event = await receive()
    if event["type"] not in ("http.request", "websocket.connect"):
        return {}
    path = scope["path"]
    query = scope.get("query_string") or b""
    try:
        query_string = query.decode("utf-8")
    except UnicodeDecodeError:
        query_string = ""
    client = scope.get("client")
    environ: dict[str, Any] = {
        "wsgi.input": _Body(event, receive),
        "REQUEST_METHOD": scope.get("method", "GET"),
        "PATH_INFO": path,
        "QUERY_STRING": query_string,
        "RAW_URI": f"{path}?{query_string}" if query_string else path,
        "SCRIPT_NAME": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": client[0] if client else "127.0.0.1",
        "asgi.receive": receive,
        "asgi.send": send,
        "asgi.scope": scope,
    }
    for raw_name, raw_value in scope["headers"]:
        try:
            name = raw_name.decode("utf-8").upper()
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if name == "CONTENT-TYPE":
            environ["CONTENT_TYPE"] = value
        elif name == "CONTENT-LENGTH":
            environ["CONTENT_LENGTH"] = value
        else:
            key = "HTTP_" + name.replace("-", "_")
            previous = environ.get(key)
            environ[key] = value if previous is None else f"{previous},{value}"
    environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
    return environ


class LeanEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server, giving direct WebSocket sessions a `LeanSocket`."""

    start_service_task: bool
    sequence_number: int
    _async: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.async_mode == "asgi":
            self._async = {**self._async, "translate_request": translate_request}
        self._id_pool = b""
        self._id_at = 0

    def generate_id(self) -> str:
        """engine.io's `generate_id`, its random bytes from a pool (override 5)."""
        at = self._id_at
        if at + ID_RANDOM_BYTES > len(self._id_pool):
            self._id_pool = os.urandom(ID_RANDOM_BYTES * ID_POOL)
            at = 0
        self._id_at = at + ID_RANDOM_BYTES
        raw = self._id_pool[at : at + ID_RANDOM_BYTES] + self.sequence_number.to_bytes(3, "big")
        self.sequence_number = (self.sequence_number + 1) & 0xFFFFFF
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        """engine.io's entry point; a direct WebSocket opening is served here instead.

        Why not through engine.io's `handle_request`: that coroutine stays on the
        stack for the whole session and keeps its locals (the parsed query and
        the request's bookkeeping) alive for hours. The checks it would make
        for such a request are made here: allowed origin, Engine.IO version 4,
        WebSocket transport, no session id (an upgrade goes the usual way).
        """
        scope = args[0] if args else kwargs.get("scope")
        connection = self._direct_websocket(scope)
        if connection is None:
            return super().handle_request(*args, **kwargs)
        return self._serve_direct(connection, *args, **kwargs)

    def _direct_websocket(self, scope: Any) -> FastWebSocketProtocol | None:
        if not isinstance(scope, dict) or scope.get("type") != "websocket":
            return None
        connection = connection_of(scope)
        if connection is None or "websocket" not in self.transports:
            return None
        query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
        if (
            query.get("transport") != ["websocket"]
            or query.get("EIO") != ["4"]
            or "sid" in query
            or "j" in query
        ):
            return None
        return connection

    async def _serve_direct(
        self, connection: FastWebSocketProtocol, scope: Any, receive: Any, send: Any
    ) -> Any:
        """A new Engine.IO session on a `LeanSocket`, served until its WebSocket closes."""
        environ = await translate_request(scope, receive, send)
        if not environ:
            return None
        refusal = self._refused_origin(environ)
        if refusal is not None:
            return await self._make_response(refusal, environ)
        if self.start_service_task:  # as engine.io: the task that checks ping timeouts
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)
        environ.pop("wsgi.input", None)  # kept for the session's lifetime, of no use to it
        sid = self.generate_id()
        socket = LeanSocket(self, sid)
        self.sockets[sid] = socket
        await socket.send(self._open_packet(sid))
        accepted = await self._trigger_event("connect", sid, environ, run_async=False)
        if accepted is not None and accepted is not True:
            del self.sockets[sid]
            self.logger.warning("Application rejected connection")
            return await self._make_response(self._unauthorized(accepted or None), environ)
        socket.schedule_ping()
        await environ["asgi.send"]({"type": "websocket.accept"})
        await socket.serve(connection)
        if socket.closed and sid in self.sockets:
            del self.sockets[sid]
        return ""  # the WebSocket said everything: no HTTP response (as engine.io's own)

    def _refused_origin(self, environ: dict[str, Any]) -> dict[str, Any] | None:
        """engine.io's origin check (CORS applies to WebSockets only through it)."""
        origin = environ.get("HTTP_ORIGIN")
        if self.cors_allowed_origins == [] or not origin:
            return None
        allowed = self._cors_allowed_origins(environ)
        if allowed is None or origin in allowed:
            return None
        self._log_error_once(origin + " is not an accepted origin.", "bad-origin")
        refusal: dict[str, Any] = self._bad_request(origin + " is not an accepted origin.")
        return refusal

    def _open_packet(self, sid: str) -> eio_packet.Packet:
        return eio_packet.Packet(
            eio_packet.OPEN,
            {
                "sid": sid,
                "upgrades": [],
                "pingTimeout": int(self.ping_timeout * 1000),
                "pingInterval": int(self.ping_interval + self.ping_interval_grace_period) * 1000,
                "maxPayload": self.max_http_buffer_size,
            },
        )


class LeanSocketIOServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on `LeanEngineServer`."""

    def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        # python-socketio's own is a coroutine that only awaits engine.io's; handing
        # back engine.io's coroutine keeps one frame fewer alive per open WebSocket.
        return self.eio.handle_request(*args, **kwargs)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return LeanEngineServer
