"""Engine.IO 4 / Socket.IO 5 spoken by hand over a raw WebSocket, for tests of the wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.gateway.live import LiveServer


def ws_url(server: LiveServer) -> str:
    """The direct-WebSocket Engine.IO URL of a server."""
    return server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"


async def frame(ws: ClientConnection, timeout: float = 5.0) -> str:
    """The next text frame."""
    received = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(received, str)
    return received


async def pong(ws: ClientConnection) -> None:
    """Answer a ping. A server that pinged and then ended the session may have closed
    the WebSocket already: sending then fails, yet the frames it sent before its close
    (the CLOSE packet `1`) are still there to read, so the failure is not raised."""
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send("3")


async def until_ended(ws: ClientConnection, timeout: float = 5.0) -> list[str | bytes]:
    """Frames received until the server ends the Engine.IO session: the WebSocket closes,
    or the CLOSE packet `1` arrives (python-engineio's own sockets send it and leave the
    closing to the client, or to the ping timeout). Pings are answered on the way."""
    received: list[str | bytes] = []
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            message = await asyncio.wait_for(ws.recv(), max(0.01, remaining))
            received.append(message)
            if message == "2":
                await pong(ws)
            elif message == "1":
                return received
    except websockets.ConnectionClosed:
        return received


async def next_event(ws: ClientConnection, timeout: float = 5.0) -> tuple[str, Any]:
    """The next Socket.IO event (`42[name, data]`), answering pings on the way."""
    while True:
        received = await frame(ws, timeout)
        if received == "2":
            await pong(ws)
        elif received.startswith("42"):
            name, *args = json.loads(received[2:])
            return name, args[0] if args else None


async def next_ack(ws: ClientConnection, ack_id: int, timeout: float = 5.0) -> Any:
    """The acknowledgement `43<id>[data]`, answering pings and skipping events on the way."""
    prefix = f"43{ack_id}["
    while True:
        received = await frame(ws, timeout)
        if received == "2":
            await pong(ws)
        elif received.startswith(prefix):
            return json.loads(received[len(prefix) - 1 :])[0]


async def open_and_authenticate(ws: ClientConnection, token: str) -> dict[str, object]:
    """OPEN, CONNECT with the token, `authenticated`; returns the OPEN packet's data."""
    opening = await frame(ws)
    assert opening.startswith("0{"), opening
    await ws.send("40" + json.dumps({"token": token}))
    assert (await frame(ws)).startswith("40{")
    event = await frame(ws)
    assert event.startswith('42["authenticated"'), event
    return dict(json.loads(opening[1:]))


async def metric(server: LiveServer, name: str) -> float:
    """A sample's value from the server's `/metrics` (a name with its labels, if any)."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
