"""uvicorn's WebSocket protocol with a shared-frame, coalesced write path.

Why: python-socketio and ASGI send one message at a time, and each message on
each socket costs an ASGI send, a frame build and a kernel write. A room
broadcast to N sockets can instead build its WebSocket frame once (see
`manager.FastManager`) and hand the same bytes to every connection, and a
connection can join every frame queued during one event-loop turn into a
single `transport.write`. ASGI has no way to share a frame, so this is a
subclass of uvicorn's sans-I/O protocol (selected through uvicorn's `ws=`
option) that offers one more operation, `push(frame)`, to the broadcast path.

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
the lean session it carries (`engine.LeanSocket`, `attach`), and registers
under it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import Protocol, State

from huddle.logging import get_logger

log = get_logger("huddle.gateway.transport")

SCOPE_EXTENSION = "huddle.connection"
"""ASGI scope extension under which a WebSocket scope carries its connection (for `engine.py`)."""

MAX_BUFFERED = 8 * 1024 * 1024
"""Unsent bytes after which a slow peer is disconnected (8 MiB)."""

_by_sid: dict[str, FastWebSocketProtocol] = {}


def connection_for(eio_sid: str) -> FastWebSocketProtocol | None:
    """The open connection carrying this Engine.IO session over WebSocket, if any."""
    return _by_sid.get(eio_sid)


def connection_of(scope: Any) -> FastWebSocketProtocol | None:
    """The connection that carries this ASGI WebSocket scope, when it is one of ours."""
    if not isinstance(scope, dict):
        return None
    connection = scope.get("extensions", {}).get(SCOPE_EXTENSION)
    return connection if isinstance(connection, FastWebSocketProtocol) else None


class _ReceiveQueue:
    """The received-message queue of one connection: one producer, one consumer.

    Why not `asyncio.Queue`: each one allocates three deques (~2.3 KB while
    empty), and an idle connection holds its queue for hours. uvicorn uses
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


class FastWebSocketProtocol(WebSocketsSansIOProtocol):
    """A uvicorn WebSocket protocol whose writes can be shared and coalesced."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Lighter equivalents of uvicorn's per-connection Queue and Event (same methods).
        self.queue = _ReceiveQueue()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._eio_sid: str | None = None

    # --- the fast path ----------------------------------------------------

    @property
    def accepts_shared_frames(self) -> bool:
        """True when a pre-built, uncompressed frame may be pushed now."""
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.writable.is_set()
            and not self.conn.extensions
        )

    def push(self, frame: bytes) -> None:
        """Queue a complete WebSocket frame; written with the rest of this loop turn's."""
        self._pending.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

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
        self._flush_scheduled = False
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

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.setdefault("extensions", {})[SCOPE_EXTENSION] = self
            raw_query = scope["query_string"]
            if b"sid=" in raw_query:  # an upgrade of a long-polling session
                sid = (parse_qs(raw_query.decode("latin-1")).get("sid") or [None])[0]
                if sid:
                    self.attach(sid)

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

    def _forget_handshake(self) -> None:
        """Drop what the upgrade left behind (~3 KB per connection, held for hours).

        uvicorn keeps the upgrade request and response, and `websockets`' parser
        generator keeps the request in its frame for the connection's lifetime;
        nothing reads them again. The parser is restarted as the plain frame
        parser it continues with — only while nothing is buffered, which holds
        at accept time: a client sends no frame before it has the 101 response.
        """
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        conn = self.conn
        if conn.state is State.OPEN and not conn.reader.buffer:
            parser = Protocol.parse(conn)
            next(parser)
            conn.parser = parser

    # --- registration -------------------------------------------------------

    def attach(self, eio_sid: str) -> None:
        """Carry this Engine.IO session (so broadcasts find it by sid)."""
        self._eio_sid = eio_sid
        _by_sid[eio_sid] = self
