"""What a client may send as a Socket.IO packet, checked as it is decoded.

python-socketio takes the packet class as its `serializer` (a documented
seam), so `GatewayPacket.decode` sees every packet a client sends, on every
engine path, before anything is dispatched. It refuses, as Node's Socket.IO
parser does:

- **binary attachments** (`451-[…]` and binary frames): Huddle's protocol is
  JSON only. The packet is decoded as one without attachments, so
  python-socketio never waits for (and buffers) the binary frames it
  announced; each such frame is itself refused.
- **reserved event names** (`connect`, `disconnect`, …): a client event of
  that name would otherwise reach the server's own connect or disconnect
  handler with arguments the client wrote.
- events whose data is not a list starting with a string name (`42{}`,
  `42[]`), packets for another namespace than `/` (except a CONNECT, which
  python-socketio answers with CONNECT_ERROR), acknowledgements (Huddle never
  asks a client for one), unknown packet types, and JSON too deep or not JSON.

A refused event that could be read far enough to know its acknowledgement id
becomes the event `MALFORMED_EVENT` with the reason as its argument, so it is
answered like any bad event (`error BAD_REQUEST` and a failed
acknowledgement); anything else raises `MalformedPacket`, which the gateway
answers with `error BAD_REQUEST` (or, before the Socket.IO CONNECT, by ending
the session, as Node does).
"""

from __future__ import annotations

from typing import Any

from socketio import packet as sio_packet

from huddle.gateway.realtime.fanout import NAMESPACE

RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
"""Event names Socket.IO keeps for itself (socket.io-parser's list): never a client event."""

MALFORMED_EVENT = "\x00malformed"
"""The event a refused but readable client event is turned into (no client can name it)."""

_INBOUND = frozenset({sio_packet.CONNECT, sio_packet.DISCONNECT, sio_packet.EVENT})


class MalformedPacket(ValueError):
    """A packet the gateway will not read; `reason` is safe to tell the client."""

    def __init__(self, reason: str = "Malformed packet.") -> None:
        super().__init__(reason)
        self.reason = reason


class GatewayPacket(sio_packet.Packet):  # type: ignore[misc]
    """python-socketio's packet, refusing on decode what a Huddle client may not send."""

    def decode(self, encoded_packet: Any) -> int:
        if not isinstance(encoded_packet, str):
            raise MalformedPacket("Binary messages are not accepted.")
        try:
            attachments = super().decode(encoded_packet)
        except (ValueError, TypeError, RecursionError, IndexError):
            raise MalformedPacket() from None
        kind = self.packet_type
        if attachments or kind in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
            self._refuse_event("Binary attachments are not accepted.")
        elif kind not in _INBOUND:
            raise MalformedPacket("Unexpected packet type.")
        elif kind != sio_packet.CONNECT and (self.namespace or NAMESPACE) != NAMESPACE:
            raise MalformedPacket("Unknown namespace.")
        elif kind == sio_packet.EVENT:
            data = self.data
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                self._refuse_event("An event is a list that starts with its name.")
            elif data[0] in RESERVED_EVENTS or data[0] == MALFORMED_EVENT:
                self._refuse_event("That event name is reserved.")
        return 0  # never any attachments to wait for

    def _refuse_event(self, reason: str) -> None:
        """Answer through the ordinary event path when the acknowledgement id is known."""
        if (self.namespace or NAMESPACE) != NAMESPACE:
            raise MalformedPacket("Unknown namespace.")
        self.packet_type = sio_packet.EVENT
        self.data = [MALFORMED_EVENT, reason]
        self.attachments: list[bytes] = []
