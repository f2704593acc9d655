"""python-socketio: a client manager that encodes a broadcast once and writes it without tasks.

Why: the stock `AsyncManager.emit` encodes the packet once but then creates
one asyncio task per recipient, each of which goes through the engine.io
socket's queue, its writer task and an ASGI send.

Overrides (`FastManager`, a subclass of `socketio.AsyncManager`; the client
manager is python-socketio's extension point, its insides are not):

1. `emit`: for everything but acknowledged emits and binary payloads, builds
   the Engine.IO message and its WebSocket frame once; each recipient whose
   connection (the uvicorn module's) accepts shared frames and whose
   engine.io queue is empty (nothing older waiting, so order holds) gets the
   frame pushed; every other recipient (long-polling, upgrading, compressed,
   paused) gets the packet through engine.io — without a task per recipient.
2. `_Room` replaces python-socketio's `bidict` rooms (`basic_enter_room`):
   every socket has a room of its own, and a `bidict` write costs a check of
   the inverse mapping and two dicts of memory per room; the inverse is kept
   only for the namespace's room of connected sockets, which needs it.
3. `basic_leave_room` / `basic_disconnect`: an index of each sid's rooms, so
   a disconnect no longer tests every room of the namespace
   (O(connections) per disconnect).

Private names used: the manager's `rooms` structure (`_fwdm`, `_invm`,
`None` as the connected room), `callbacks`, `pending_connect`,
`pending_disconnect`, `server.packet_class`, `server.eio.sockets`, the
engine.io socket's `connection` (the engineio module's), `upgraded`,
`queue`, `closed`, `closing`, `send`. Needs the uvicorn module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import socketio
from bidict import ValueDuplicationError
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from websockets.frames import Frame, Opcode

from huddle.accel import Gate, Tested
from huddle.accel.uvicorn import connection_for, flush_waiting
from huddle.metrics import FANOUT_DELIVERIES

GATE = Gate(
    (
        Tested("python-socketio", "socketio", ("5.18.1",)),
        Tested("python-engineio", "engineio", ("4.15.1",)),
    ),
    needs=("uvicorn",),
)

_SHARED = FANOUT_DELIVERIES.labels(path="shared")
_QUEUED = FANOUT_DELIVERIES.labels(path="queued")


class _Room:
    """A room's members, sid -> Engine.IO sid: what python-socketio keeps in a `bidict`.

    Why not the `bidict`: every socket has a room of its own and joins a few
    more, and a `bidict` write checks and maintains the inverse mapping, with
    two dicts of memory per room. python-socketio reads rooms
    through the mapping methods below and `_fwdm`, and needs the inverse only
    for the namespace's room of connected sockets (`None`), whose Engine.IO
    sids must be unique (`ValueDuplicationError`, as `bidict` raises) and which
    it looks up through `_invm`.
    """

    __slots__ = ("_fwdm", "_invm")

    def __init__(self, inverse: bool) -> None:
        self._fwdm: dict[str, str] = {}
        self._invm: dict[str, str] | None = {} if inverse else None

    def __setitem__(self, sid: str, eio_sid: str) -> None:
        inverse = self._invm
        if inverse is not None:
            owner = inverse.get(eio_sid)
            if owner is not None and owner != sid:
                raise ValueDuplicationError(eio_sid)
            previous = self._fwdm.get(sid)
            if previous is not None:
                del inverse[previous]
            inverse[eio_sid] = sid
        self._fwdm[sid] = eio_sid

    def __delitem__(self, sid: str) -> None:
        eio_sid = self._fwdm.pop(sid)
        if self._invm is not None:
            self._invm.pop(eio_sid, None)

    def __getitem__(self, sid: str) -> str:
        return self._fwdm[sid]

    def get(self, sid: str, default: Any = None) -> Any:
        return self._fwdm.get(sid, default)

    def __contains__(self, sid: object) -> bool:
        return sid in self._fwdm

    def __len__(self) -> int:
        return len(self._fwdm)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fwdm)

    def items(self) -> Any:
        return self._fwdm.items()


class FastManager(socketio.AsyncManager):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # sid -> the rooms it is in. python-socketio finds a leaving socket's rooms
        # by testing every room of the namespace, and every socket has a room of
        # its own: O(connections) per disconnect, a minute of CPU when 10,000
        # sockets drop at once. (A sid belongs to one namespace.)
        self._rooms_of: dict[str, list[Any]] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        # python-socketio's checks and steps, with `_Room` for its `bidict`.
        if eio_sid is None and namespace not in self.rooms:
            raise ValueError("sid is not connected to requested namespace")
        if sid != room and self.is_sid_room(namespace, room):
            raise ValueError("cannot enter a sid room")
        members = self.rooms.setdefault(namespace, {}).get(room)
        if members is None:
            members = self.rooms[namespace][room] = _Room(inverse=room is None)
        if eio_sid is None:
            eio_sid = self.rooms[namespace][None][sid]
        members[sid] = eio_sid
        rooms = self._rooms_of.get(sid)
        if rooms is None:
            self._rooms_of[sid] = [room]
        elif room not in rooms:
            rooms.append(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get(sid)
        if rooms is not None and room in rooms:
            rooms.remove(room)
            if not rooms:
                del self._rooms_of[sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio's, with the socket's rooms taken from the index."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get(sid, ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or namespace not in self.rooms:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        try:
            # binary=False: python-socketio would otherwise walk the whole payload
            # looking for bytes first; JSON encoding finds them anyway (TypeError).
            encoded = self.server.packet_class(
                sio_packet.EVENT, namespace=namespace, data=[event, *args], binary=False
            ).encode()
        except TypeError:  # bytes somewhere (or not JSON at all): python-socketio's own path
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, **kwargs)
            return
        if skip_sid is None or isinstance(skip_sid, list | set | tuple):
            skip = skip_sid or ()
        else:
            skip = (skip_sid,)
        message = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        frame: bytes | None = None
        shared = queued = 0
        sockets = self.server.eio.sockets
        # A copy of the room's members (python-socketio's `get_participants` copies too):
        # the awaits below cannot disturb it.
        if isinstance(room, str | None):
            members = self.rooms[namespace].get(room)
            participants = list(members.items()) if members is not None else []
        else:  # several rooms: python-socketio's union
            participants = list(self.get_participants(namespace, room))
        for sid, eio_sid in participants:
            if skip and sid in skip:
                continue
            socket = sockets.get(eio_sid)
            if socket is None or socket.closed or socket.closing:
                continue
            # A lean socket (engine.py) carries its connection and never queues;
            # engine.io's own socket is looked up, and only when nothing is queued.
            connection = getattr(socket, "connection", None)
            if connection is None and socket.upgraded and socket.queue.empty():
                connection = connection_for(eio_sid)
            if connection is not None:
                if frame is None:
                    text = message.encode()
                    frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
                if connection.push_shared(frame):
                    shared += 1
                    continue
            await socket.send(message)
            queued += 1
        if shared:
            _SHARED.inc(shared)
            flush_waiting()  # a long loop turn (a burst of events) writes as it goes
        if queued:
            _QUEUED.inc(queued)
