"""The one door between the gateway and python-socketio's server: sending, rooms, disconnects.

Every emit, every room change and every disconnect of the gateway goes
through `Fanout`, so nothing else needs to know how python-socketio (or an
accel module's manager, which makes `room` an encode-once write) does it.
Order per socket is the contract callers rely on: two awaited calls reach a
socket in the order they were made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

NAMESPACE = "/"

TRANSPORT_CLOSE_AFTER = 5.0
"""Seconds a client has to close its connection after being disconnected, before we do."""


class Fanout:
    def __init__(self, sio: Any) -> None:
        self._sio = sio

    async def room(self, room: str, event: str, payload: Any, *, skip: Sequence[str] = ()) -> None:
        """Emit to every socket of this instance in `room`, except the sids in `skip`."""
        await self._sio.emit(event, payload, to=room, skip_sid=list(skip) if skip else None)

    async def socket(self, sid: str, event: str, payload: Any) -> None:
        """Emit to one socket."""
        await self._sio.emit(event, payload, to=sid)

    async def enter(self, sid: str, room: str) -> bool:
        """Put a socket in a room; False when the socket went away meanwhile."""
        try:
            await self._sio.enter_room(sid, room, namespace=NAMESPACE)
        except (KeyError, ValueError):
            return False
        return True

    async def leave(self, sid: str, room: str) -> None:
        await self._sio.leave_room(sid, room, namespace=NAMESPACE)

    async def disconnect(self, sid: str) -> None:
        """The Socket.IO disconnect, then the transport once the client had time to close it.

        Runs after the current handler has returned (call it from a task):
        whatever that handler was answering (an `authentication_error`, an
        acknowledgement) is queued on the socket first, and the queue is sent in
        order. A well-behaved client closes its transport when its last
        namespace is disconnected; closing it here at once would be faster, but
        socket.io's JS client over long-polling handles a transport CLOSE before
        the DISCONNECT that came in the same response, and so would reconnect.
        """
        await asyncio.sleep(0)
        eio_sid = self._sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        await self._sio.disconnect(sid, namespace=NAMESPACE)
        if eio_sid is None:
            return
        await asyncio.sleep(TRANSPORT_CLOSE_AFTER)
        if eio_sid in self._sio.eio.sockets:
            await self._sio.eio.disconnect(eio_sid)
