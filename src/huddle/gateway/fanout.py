"""The one door every gateway emit goes through, to a room or to one socket.

Keeping it to this class is deliberate: the fan-out benchmark (SPEC §8) will
replace `room` with an encode-once fast path, and nothing else in the gateway
should need to change for that. Order per socket is the contract callers rely
on: two awaited calls reach a socket in the order they were made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Fanout:
    def __init__(self, sio: Any) -> None:
        self._sio = sio

    async def room(self, room: str, event: str, payload: Any, *, skip: Sequence[str] = ()) -> None:
        """Emit to every socket of this instance in `room`, except the sids in `skip`."""
        await self._sio.emit(event, payload, to=room, skip_sid=list(skip) if skip else None)

    async def socket(self, sid: str, event: str, payload: Any) -> None:
        """Emit to one socket."""
        await self._sio.emit(event, payload, to=sid)
