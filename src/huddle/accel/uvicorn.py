"""uvicorn and websockets: a WebSocket protocol with a shared-frame, coalesced write path.

Why: python-socketio and ASGI send one message at a time, and each message on
each socket costs an ASGI send, a frame build and a kernel write. A room
broadcast to N sockets can instead build its WebSocket frame once (the
socketio module's `FastManager`) and hand the same bytes to every connection,
and a connection can join every frame queued during one event-loop turn into
a single `transport.write`. ASGI has no way to share a frame, so this is a
subclass of uvicorn's sans-I/O protocol (selected with uvicorn's `ws=`
option) offering one more operation, `push(frame)`.

Overrides (against uvicorn's `WebSocketsSansIOProtocol` and
`HttpToolsProtocol`, and `websockets`' sans-I/O `ServerProtocol`):

1. `FastWebSocketProtocol.push` / `push_shared` / `send_now` /
   `_write_pending`, `_Flusher` and `flush_waiting`: frames queued per
   connection and written in one write per connection, at the end of the
   loop turn — or, while frames keep coming, once a window has passed since
   the last flush (`FLUSH_WINDOW`, twice as long as the last flush took when
   that was longer: `FLUSH_SHARE`), so that
   events in quick succession share writes; a long turn writes once its
   oldest frame has waited `FLUSH_AFTER`. `send` frames ordinary ASGI sends
   into the same queue, so order holds.
2. `FastWebSocketProtocol.__init__`: uvicorn's per-connection `asyncio.Queue`
   and `Event` replaced by single-consumer equivalents (`_ReceiveQueue`,
   `_Flag`), which allocate nothing while idle.
3. `_connect` (uvicorn's `handle_connect`, rewritten): the scope also
   carries the connection (`SCOPE_EXTENSION`, read by the engineio module),
   and `websockets`' parser is replaced by a fresh frame parser once the
   request is in (the handshake parser keeps the request alive for hours).
4. `take_over` / `FastHttpToolsProtocol.handle_websocket_upgrade`: the
   upgrade request handed over as httptools parsed it, instead of written
   back out for `websockets` to parse again in Python.
5. `_forget_handshake`: the upgrade request and response dropped once the
   WebSocket is accepted.
6. `close_now`, `shutdown`, `connection_lost`: a peer that stopped reading
   is dropped instead of waited on; what was queued is flushed first.
7. `_accept` / `send` of `websocket.accept`: `websockets`' `accept` for a
   plain handshake (`_plain_upgrade`) with the same checks, minus what
   uvicorn throws away or never needs: it formats a `Date` header that
   uvicorn deletes again, and parses `Connection` and `Upgrade` with its
   full header grammar (a plain request's are one token each; anything
   else goes `websockets`' way, errors included). The 101 response is
   queued like a frame, so it leaves in one write with the Engine.IO OPEN
   packet; uvicorn's "accepted" log line is built only when INFO is on.
   Together ~7 % of a cold handshake's CPU (py-spy, docs/benchmarks.md).
8. `FastWebSocketProtocol.__slots__`: every attribute uvicorn's protocol
   sets (`_UVICORN_ATTRIBUTES`) and this class's own, as slots. 41 of
   them made each connection's instance dictionary a 1,584-byte table of
   its own (CPython 3.11 shares keys up to 29); as slots they take 328
   bytes. Nothing behaves differently: an attribute a later uvicorn adds
   goes to the instance dictionary the class still has.
9. `connection_lost` and `FastHttpToolsProtocol.handle_websocket_upgrade`:
   the two reference cycles of a connection broken — the scope's extension
   that carries the connection (dropped once it is lost) and the upgrade's
   HTTP protocol and its parser's bound callbacks (the parser released once
   the upgrade is handed over) — so that a closed connection and a handed-over
   HTTP protocol are freed when their last reference goes. With the cycles,
   each closed connection (~45 objects) waited for a full collection of the
   cyclic collector, which a gateway with thousands of long-lived sockets
   runs rarely: ~44,000 objects after 2,000 sockets closed, none now.

Private names used: uvicorn's `_types.ASGISendEvent`, the protocols'
`conn`, `transport`, `handshake_complete`, `initial_response`,
`close_sent`, `disconnected`, `writable`, `queue`, `read_paused`,
`handshake_initiated`, `response`, `request`, `scope`, `tasks`,
`connections`, `app_state`, `root_path`, `asgi_version`, `on_task_complete`,
`ws_protocol_class`, `server_state`, the HTTP protocol's `parser`; websockets' `Protocol.parse`,
`conn.reader.buffer`, `conn.parser`, `data_to_send`, `send_text`,
`send_binary`, `accept`, `send_response`, `process_origin`,
`process_extensions`, `process_subprotocol`, `origin`, `extensions`,
`subprotocol`, `accept_called`, `start_keepalive`, `default_headers`,
`logger`.

Invariants:
- Order per connection: ordinary ASGI sends are buffered into the same queue
  as pushed frames, so everything leaves in the order it was handed over. The
  manager pushes only when the engine.io socket has nothing older queued.
- No compression: a connection that negotiated permessage-deflate is never
  offered shared frames (they would have to be compressed per connection).
- Backpressure: while the transport is paused (its buffer above the high-water
  mark) the fast path is off and engine.io's own queue waits; a peer whose
  unsent bytes pass `MAX_BUFFERED` is disconnected instead of being buffered
  without limit.

The connection learns its Engine.IO session id from the upgrade request's
`sid` query parameter (a long-polling session upgrading), or is told it by
the lean session it carries (the engineio module's `LeanSocket`, `attach`),
and registers under it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qs, unquote

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import InvalidHandshake
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, State
from websockets.utils import accept_key

from huddle.accel import Gate, Tested
from huddle.logging import get_logger

GATE = Gate(
    (
        Tested("uvicorn", "uvicorn", ("0.54.0",)),
        Tested("websockets", "websockets", ("17.4",)),
        Tested("httptools", "httptools", ("0.9.0",)),
    )
)

log = get_logger("huddle.accel.uvicorn")

SCOPE_EXTENSION = "huddle.connection"
"""ASGI scope extension under which a WebSocket scope carries its connection (for `engine.py`)."""

MAX_BUFFERED = 8 * 1024 * 1024
"""Unsent bytes after which a slow peer is disconnected (8 MiB)."""

_by_sid: dict[str, FastWebSocketProtocol] = {}

FLUSH_AFTER = 0.005
"""Seconds a queued frame may wait for its loop turn to end before `flush_waiting` writes it."""
FLUSH_WAIT_PER_CONNECTION = 60e-6
"""...and more when many connections wait, so that writing N connections early stays a
small share of the time waited (2,000 connections: every 120 ms)."""
FLUSH_WINDOW = 0.002
"""Seconds between two flushes while frames keep coming (see `_Flusher`)..."""
FLUSH_WINDOW_MAX = 0.05
"""...longer after a flush that took long, up to this (see `_Flusher`)."""
FLUSH_SLICE = 256
"""Connections a flush writes per loop turn (~2 ms): between slices the loop serves requests,
so a flush to thousands of connections does not hold up the edits that make the next events."""
FLUSH_SHARE = 1 / 3
"""The share of the process that writes may take while frames keep coming: the window after
a flush lasts `1 / FLUSH_SHARE - 1` times as long as the flush took."""


def connection_for(eio_sid: str) -> FastWebSocketProtocol | None:
    """The open connection carrying this Engine.IO session over WebSocket, if any."""
    return _by_sid.get(eio_sid)


class _Flusher:
    """Writes every connection's queued frames, each connection's in one `transport.write`.

    One per process (connections share it), so a broadcast to N connections
    schedules one flush, not N callbacks. A frame queued while nothing was
    written for `FLUSH_WINDOW` goes out at the end of the loop turn, as
    before; while frames keep coming (a flush happened less than a window
    ago), the next flush waits for the window to close, so that the frames of
    events arriving in quick succession — edits from several people, a
    storm of presence — leave in one write per connection instead of one per
    event. A quiet server answers at once; a busy one at most a window late.

    The window is at least `FLUSH_WINDOW` and twice as long as the last
    flush took (`FLUSH_SHARE`, at most `FLUSH_WINDOW_MAX`): writing to 2,000
    connections costs ~15 ms of CPU (a system call each, ~7 µs), so the
    events of edits made one after another (each a REST request of a few
    milliseconds) share the next write instead of each paying 2,000 system
    calls, and writes never take more than about a third of the process.
    With a window as long as the flush (half the process), sequential PATCHes
    to a team of 2,000 shared a write ~2.8 events at a time; the latency this
    adds (a window of ~30 ms there) is a fraction of the Node peer's
    (docs/benchmarks.md).

    A flush writes `FLUSH_SLICE` connections per loop turn: the requests that
    make the next events are served between slices rather than after a 15 ms
    flush, so more of them share the next one. Each connection is written
    once per flush, with everything it holds by its turn; what is queued
    meanwhile waits for the flush to end and its window to pass.
    `flush_waiting` (a long loop turn) writes everything at once.
    """

    __slots__ = ("handle", "last", "position", "queued", "since", "took", "window", "writing")

    def __init__(self) -> None:
        self.queued: list[FastWebSocketProtocol] = []
        """Connections holding frames, in the order they queued."""
        self.handle: asyncio.Handle | None = None
        """The next flush, or the next slice of the one under way."""
        self.since = 0.0
        """When the oldest queued frame was queued (loop time)."""
        self.last = float("-inf")
        """When the last flush ended (loop time)."""
        self.window = FLUSH_WINDOW
        """The least time from the end of a flush to the next one while frames keep coming."""
        self.writing: list[FastWebSocketProtocol] | None = None
        """The connections of the flush under way, written `FLUSH_SLICE` per loop turn."""
        self.position = 0
        """How many of `writing` are written."""
        self.took = 0.0
        """CPU seconds the flush under way has taken so far."""

    def queue(self, connection: FastWebSocketProtocol) -> None:
        if not self.queued:
            self.since = connection.loop.time()
        self.queued.append(connection)
        if self.handle is None and self.writing is None:
            self._schedule(connection.loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self.last + self.window
        if due <= loop.time():
            self.handle = loop.call_soon(self.flush)
        else:
            self.handle = loop.call_at(due, self.flush)

    def flush(self, *, everything: bool = False) -> None:
        """Start writing what is queued (its first slice now, or `everything`); a flush
        under way is finished first, all of it, so what it holds leaves before anything
        newer."""
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.cancel()
        if self.writing is not None:
            self._write(everything=True)
        queued, self.queued = self.queued, []
        if not queued:
            return
        self.writing, self.position, self.took = queued, 0, 0.0
        self._write(everything=everything)

    def _next_slice(self) -> None:
        self.handle = None
        if self.writing is not None:
            self._write(everything=False)

    def _write(self, *, everything: bool) -> None:
        writing = self.writing
        assert writing is not None
        start = self.position
        end = len(writing) if everything else min(len(writing), start + FLUSH_SLICE)
        started = time.perf_counter()  # uvloop's loop.time() stands still within a callback
        for index in range(start, end):
            connection = writing[index]
            connection._queued = False
            connection._write_pending()
        took = time.perf_counter() - started
        self.took += took
        self.position = end
        loop = writing[0].loop
        if end < len(writing):
            if not everything:
                self.handle = loop.call_soon(self._next_slice)
            return
        self.writing = None
        self.last = loop.time() + took
        self.window = min(FLUSH_WINDOW_MAX, max(FLUSH_WINDOW, self.took * (1 / FLUSH_SHARE - 1)))
        if self.queued and self.handle is None and not everything:
            self._schedule(loop)  # what queued while the slices went out (else: the caller's)


_flusher = _Flusher()


def flush_waiting() -> None:
    """Write the queued frames of every connection now, if the oldest has waited `FLUSH_AFTER`.

    A connection joins a loop turn's frames into one write at the end of the
    turn. A turn can be long: a burst of events written and published one
    unit of work after another never yields (~0.5 ms each), so 50 of them held
    every frame for ~30 ms and the clients started reading only then. The
    broadcast path calls this once per event: a long turn writes every few
    milliseconds (a handful of writes per connection per burst instead of one),
    and delivery overlaps the work still to do; the more connections wait,
    the longer between such writes (`FLUSH_WAIT_PER_CONNECTION`). Order per
    connection holds: what is written now was queued first.
    """
    queued = _flusher.queued
    if not queued:
        return
    waited = queued[0].loop.time() - _flusher.since
    if waited < FLUSH_AFTER or waited < len(queued) * FLUSH_WAIT_PER_CONNECTION:
        return
    _flusher.flush(everything=True)  # this turn goes on: no slice could go out before it ends


def connection_of(scope: Any) -> FastWebSocketProtocol | None:
    """The connection that carries this ASGI WebSocket scope, when it is one of ours."""
    if not isinstance(scope, dict):
        return None
    connection = scope.get("extensions", {}).get(SCOPE_EXTENSION)
    return connection if isinstance(connection, FastWebSocketProtocol) else None


class _ReceiveQueue:
    """The received-message queue of one connection: one producer, one consumer.

    Why not `asyncio.Queue`: each one allocates three deques even while empty,
    and an idle connection holds its queue for hours. uvicorn uses
    only `put_nowait`, `get` and `empty` here, with a single awaiting reader.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class _Flag:
    """`asyncio.Event` without an eager deque of waiters (see `_ReceiveQueue`)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


_UVICORN_ATTRIBUTES = (
    "app",
    "app_state",
    "asgi_version",
    "client",
    "close_sent",
    "close_timeout",
    "close_timer",
    "config",
    "conn",
    "connections",
    "curr_msg_data_type",
    "default_headers",
    "disconnected",
    "frames",
    "handshake_complete",
    "handshake_initiated",
    "initial_response",
    "last_ping_rtt",
    "logger",
    "loop",
    "pending_ping_payload",
    "ping_interval",
    "ping_sent_at",
    "ping_timeout",
    "ping_timer",
    "pong_timer",
    "queue",
    "read_paused",
    "request",
    "response",
    "root_path",
    "scheme",
    "scope",
    "server",
    "tasks",
    "transport",
    "writable",
)
"""The instance attributes `WebSocketsSansIOProtocol` sets (uvicorn 0.54.0)."""


class FastWebSocketProtocol(WebSocketsSansIOProtocol):
    """A uvicorn WebSocket protocol whose writes can be shared and coalesced."""

    # Every attribute uvicorn's protocol and this one set, as slots. uvicorn's
    # 37 and this class's 4 make 41: past CPython 3.11's 29 keys of a shared
    # instance dictionary, so each connection held a 1,584-byte dictionary of
    # its own for hours (docs/benchmarks.md, "Memory per idle connection").
    # Slots take 8 bytes each; a name missing here still works, in the
    # instance dictionary the class keeps (uvicorn's class has no slots).
    __slots__ = (
        *_UVICORN_ATTRIBUTES,
        "_eio_sid",
        "_pending",
        "_queued",
        "_writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Lighter equivalents of uvicorn's per-connection Queue and Event (same methods).
        self.queue = _ReceiveQueue()  # type: ignore[assignment]
        self._writable = _Flag()
        self.writable = self._writable  # type: ignore[assignment]
        self._pending: list[bytes] = []
        self._queued = False
        self._eio_sid: str | None = None

    # --- the fast path ----------------------------------------------------

    def push_shared(self, frame: bytes) -> bool:
        """`push` a pre-built, uncompressed frame when this connection can take one now
        (accepted, open, not paused, no compression); False when it cannot. One call per
        recipient of a broadcast: ~2,000 of them per event in a big team."""
        if (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self._writable._set
            and not self.conn.extensions
        ):
            # `push`, inlined: this runs once per recipient of every broadcast.
            self._pending.append(frame)
            if not self._queued:
                self._queued = True
                _flusher.queue(self)
            return True
        return False

    def push(self, frame: bytes) -> None:
        """Queue a complete WebSocket frame; written with the others queued (`_Flusher`)."""
        self._pending.append(frame)
        if not self._queued:
            self._queued = True
            _flusher.queue(self)

    def send_now(self, message: str | bytes) -> None:
        """Frame a message for this connection and queue it; dropped once closing."""
        if self._open_for_writes():
            self._frame(message)

    async def close_now(self, code: int = 1000) -> None:
        """Close the WebSocket after what was queued (no-op when already closing)."""
        if self.close_sent or self.disconnected or not self.handshake_complete:
            return
        if not self.writable.is_set():
            # The peer stopped reading (the transport is paused): a close frame
            # would wait behind everything it has not read, for ever. Drop it.
            self._flush()
            self.transport.abort()
            return
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": ""})
        except Exception:  # the peer is gone already: nothing left to close
            return

    def _open_for_writes(self) -> bool:
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and self.conn.state is State.OPEN
        )

    def _frame(self, message: str | bytes | bytearray) -> None:
        if isinstance(message, str):
            self.conn.send_text(message.encode())
        else:
            self.conn.send_binary(message)
        for chunk in self.conn.data_to_send():
            self.push(chunk)

    def _flush(self) -> None:
        """Write this connection's queued frames now (before a close)."""
        self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if self.disconnected or self.transport.is_closing():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_BUFFERED:
            log.warning("slow_consumer_disconnected", sid=self._eio_sid)
            self.transport.abort()

    # --- uvicorn hooks ----------------------------------------------------

    def take_over(self, http: HttpToolsProtocol) -> bool:
        """Start from the upgrade request `http` parsed already; False if it cannot.

        uvicorn writes a parsed upgrade request back out as bytes and this
        protocol's `websockets` parser reads it again, in Python, with the
        peer and local addresses looked up once more: ~5 % of the CPU of an
        authenticated handshake (py-spy, docs/benchmarks.md). Here the
        request is built from what httptools parsed; `websockets` still
        validates it and makes the response (`accept`). A request that the
        re-parse would have refused (non-ASCII target, a body) is left to it.
        """
        target = http.url
        headers = Headers()
        raw_headers = http.scope["headers"]
        try:
            path = target.decode("ascii")
            for name, value in raw_headers:
                if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                    return False
                headers[name.decode("ascii")] = value.decode("latin-1")
        except UnicodeDecodeError:
            return False
        self.connections.add(self)
        self.transport = http.transport
        self.server = http.server
        self.client = http.client
        self.scheme = "wss" if http.scheme == "https" else "ws"
        scope = http.scope
        request = Request(
            path, headers, method=scope["method"], protocol=f"HTTP/{scope['http_version']}"
        )
        self._connect(request, list(raw_headers))
        return True

    def handle_connect(self, event: Request) -> None:
        # The re-parse path (`take_over` declined): uvicorn's scope headers.
        self._connect(
            event,
            [
                (name.lower().encode("ascii"), value.encode("latin-1"))
                for name, value in event.headers.raw_items()
            ],
        )

    def _connect(self, request: Request, headers: list[tuple[bytes, bytes]]) -> None:
        """uvicorn's `handle_connect`, with the scope also carrying this connection.

        The request is in, so `websockets`' parser goes straight to frames: a
        fresh frame parser, not the handshake parser that continues with frames
        but keeps the request in its generator frame (for
        hours) — only while nothing is buffered after the request (a client
        sends no frame before it has the 101 response). A refused handshake
        replaces it again (`websockets` discards what follows).
        """
        self.request = request
        conn = self.conn
        if not conn.reader.buffer:
            parser = Protocol.parse(conn)
            next(parser)
            conn.parser = parser
        self.response = self._accept(request)
        self.handshake_initiated = True
        if self.response.status_code != 101:
            self.handshake_complete = True
            self.close_sent = True
            self.conn.send_response(self.response)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            return
        raw_path, _, query_string = request.path.partition("?")
        subprotocols: list[str] = []
        for header in request.headers.get_all("Sec-WebSocket-Protocol"):
            subprotocols.extend(token.strip() for token in header.split(","))
        raw_query = query_string.encode("ascii")
        extensions: dict[str, Any] = {"websocket.http.response": {}, SCOPE_EXTENSION: self}
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": self.root_path,
            "path": self.root_path + unquote(raw_path),
            "raw_path": self.root_path.encode("ascii") + raw_path.encode("ascii"),
            "query_string": raw_query,
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": extensions,
        }
        if b"sid=" in raw_query:  # an upgrade of a long-polling session
            sids = parse_qs(raw_query.decode("latin-1")).get("sid")
            if sids and sids[0]:
                self.attach(sids[0])
        self.queue.put_nowait({"type": "websocket.connect"})
        task = self.loop.create_task(self.run_asgi())
        task.add_done_callback(self.on_task_complete)
        self.tasks.add(task)

    async def send(self, message: ASGISendEvent) -> None:
        kind = message["type"]
        if (
            kind == "websocket.send"
            and self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
        ):
            await self.writable.wait()
            if self.disconnected:
                await super().send(message)  # raises ClientDisconnected, as uvicorn does
                return
            text = message.get("text")
            data = message.get("bytes")
            if isinstance(text, str):
                self._frame(text)
            elif isinstance(data, bytes | bytearray):
                self._frame(data)
            return
        if (
            kind == "websocket.accept"
            and not self.handshake_complete
            and self.initial_response is None
            and self.handshake_initiated
            and self.response is not None
        ):
            await self.writable.wait()
            if not self.disconnected:
                self._send_accept(message)
                self._forget_handshake()
                return
        if kind == "websocket.close":
            self._flush()  # what was sent before the close goes before it
        await super().send(message)
        if kind == "websocket.accept" and self.handshake_complete:
            self._forget_handshake()

    def shutdown(self) -> None:
        self._flush()
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._eio_sid is not None and _by_sid.get(self._eio_sid) is self:
            del _by_sid[self._eio_sid]
        self._pending.clear()
        super().connection_lost(exc)
        # The scope carries this connection and this connection the scope: without
        # that cycle a closed connection (~45 objects, ~16 KB) is freed when its last
        # reference goes instead of waiting, for hours, for a full collection.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(SCOPE_EXTENSION, None)

    def _forget_handshake(self) -> None:
        """Drop the upgrade request and response uvicorn keeps (held for hours, never read).

        (`_connect` already gave `websockets` a frame parser that does not hold
        the request.)
        """
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]

    def _accept(self, request: Request) -> Response:
        """`websockets`' `ServerProtocol.accept`, for a plain handshake without its waste."""
        conn = self.conn
        key = _plain_upgrade(request)
        if key is None:
            return conn.accept(request)
        headers = request.headers
        try:
            conn.origin = conn.process_origin(headers)
            extensions_header, conn.extensions = conn.process_extensions(headers)
            protocol_header = conn.subprotocol = conn.process_subprotocol(headers)
        except InvalidHandshake:
            return conn.accept(request)  # the refusal, as `websockets` words it
        conn.accept_called = True
        response_headers = Headers(
            Upgrade="websocket", Connection="Upgrade", **{"Sec-WebSocket-Accept": accept_key(key)}
        )
        if extensions_header is not None:
            response_headers["Sec-WebSocket-Extensions"] = extensions_header
        if protocol_header is not None:
            response_headers["Sec-WebSocket-Protocol"] = protocol_header
        return Response(101, "Switching Protocols", response_headers)

    def _send_accept(self, message: Any) -> None:
        """uvicorn's answer to `websocket.accept`, the 101 queued with the frames after it."""
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(
                '%s - "WebSocket %s" [accepted]',
                get_client_addr(self.scope),
                get_path_with_query_string(self.scope),
            )
        headers = self.response.headers
        if "Date" in headers:
            del headers["Date"]
        for name, value in self.default_headers:
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        for name, value in message.get("headers") or ():
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        subprotocol = message.get("subprotocol")
        if subprotocol:
            headers["Sec-WebSocket-Protocol"] = subprotocol
        if self.transport.is_closing():
            return
        self.handshake_complete = True
        self.conn.send_response(self.response)
        for chunk in self.conn.data_to_send():
            self.push(chunk)
        self.start_keepalive()

    # --- registration -------------------------------------------------------

    def attach(self, eio_sid: str) -> None:
        """Carry this Engine.IO session (so broadcasts find it by sid)."""
        self._eio_sid = eio_sid
        _by_sid[eio_sid] = self


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _one(headers: Headers, name: str) -> str | None:
    try:
        return headers.get(name)
    except MultipleValuesError:
        return None


def _plain_upgrade(request: Request) -> str | None:
    """The `Sec-WebSocket-Key` of a plain, valid upgrade request, else None.

    Plain: GET over HTTP/1.1, one `Connection` header of comma-separated
    tokens one of which is `upgrade`, one `Upgrade: websocket`, one key that
    is 16 bytes in base64, one `Sec-WebSocket-Version: 13`: what
    `ServerProtocol.process_request` accepts, read without its full header
    grammar. None sends the request through `websockets`' own `accept`,
    which accepts or refuses it exactly as before.
    """
    if request.method != "GET" or request.protocol != "HTTP/1.1":
        return None
    headers = request.headers
    connection = _one(headers, "Connection")
    upgrade = _one(headers, "Upgrade")
    key = _one(headers, "Sec-WebSocket-Key")
    if connection is None or upgrade is None or key is None:
        return None
    if _one(headers, "Sec-WebSocket-Version") != "13" or upgrade.lower() != "websocket":
        return None
    tokens = [token.strip() for token in connection.split(",")]
    if not all(_TOKEN.fullmatch(token) for token in tokens) or not any(
        token.lower() == "upgrade" for token in tokens
    ):
        return None
    try:
        if len(base64.b64decode(key.encode(), validate=True)) != 16:
            return None
    except (binascii.Error, UnicodeEncodeError):
        return None
    return key


class FastHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, handing WebSocket upgrades over parsed (`take_over`)."""

    def handle_websocket_upgrade(self) -> None:
        protocol_class: Any = self.ws_protocol_class
        if not (
            isinstance(protocol_class, type) and issubclass(protocol_class, FastWebSocketProtocol)
        ):
            super().handle_websocket_upgrade()
            return
        protocol = protocol_class(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        if not protocol.take_over(self):
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        self.transport.set_protocol(protocol)
        # This protocol is done with: its parser holds its bound callbacks, a cycle
        # only the collector would free (with the request's scope and headers).
        self.parser = None  # type: ignore[assignment]
