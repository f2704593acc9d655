"""The Engine.IO layer of direct WebSocket sessions (gateway/engine.py), seen from the wire.

A raw WebSocket client speaks Engine.IO 4 / Socket.IO 5 by hand against a real
`huddle serve`, so that what the lean socket writes — the OPEN packet, pings,
the CLOSE packet and the WebSocket close — is checked frame by frame, with a
heartbeat shortened to one second.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import websockets

from tests.factories import Factory
from tests.gateway import raw
from tests.gateway.live import LiveServer
from tests.gateway.raw import metric, open_and_authenticate, ws_url


def _heartbeat(
    tmp_path_factory: pytest.TempPathFactory, name: str, ping_timeout: int
) -> Iterator[LiveServer]:
    """A server pinging every second, with AUTH_TIMEOUT 1 s and the given ping timeout."""
    server = LiveServer(
        tmp_path_factory.mktemp(name),
        env={
            "SOCKET_PING_INTERVAL": "1",
            "SOCKET_PING_TIMEOUT": str(ping_timeout),
            "AUTH_TIMEOUT": "1",
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def heartbeat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # A 2 s ping timeout: short, yet not so short that a loaded machine misses a pong.
    yield from _heartbeat(tmp_path_factory, "engine", ping_timeout=2)


@pytest.fixture
async def token(heartbeat_server: LiveServer) -> AsyncIterator[str]:
    async with httpx.AsyncClient(base_url=heartbeat_server.url) as client:
        user = await Factory(client).user()
    yield user.access_token


async def test_open_packet_announces_the_configured_heartbeat(
    heartbeat_server: LiveServer, token: str
) -> None:
    async with websockets.connect(ws_url(heartbeat_server)) as ws:
        handshake = await open_and_authenticate(ws, token)
    assert handshake["upgrades"] == []
    assert handshake["pingTimeout"] == 2000
    assert handshake["pingInterval"] >= 1000
    assert isinstance(handshake["sid"], str) and handshake["sid"]


async def test_answered_pings_keep_the_session_and_silence_ends_it(
    heartbeat_server: LiveServer, token: str
) -> None:
    async with websockets.connect(ws_url(heartbeat_server)) as ws:
        await open_and_authenticate(ws, token)
        # Answered pings keep coming, one per interval, and the session stays.
        for _ in range(3):
            assert await raw.frame(ws, timeout=3) == "2"
            await ws.send("3")
        await ws.send('42["no_such_event"]')  # still served: answered with an error
        answer = await raw.frame(ws, timeout=3)
        assert json.loads(answer[2:])[1]["code"] == "BAD_REQUEST", answer
        # Now stop answering pings: the server gives up within interval + timeout.
        assert await raw.frame(ws, timeout=3) == "2"
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frame = await raw.frame(ws, timeout=7)
                assert frame in ("2", "1") or frame.startswith("42"), frame
        assert time.monotonic() - started < 7


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Frequent pings with a longer ping timeout: a test that waits out the server's own
    disconnect (AUTH_TIMEOUT, then TRANSPORT_CLOSE_AFTER: ~6 s) must not lose the session
    to a pong that a loaded machine delivered 2 s late. (Not much longer: python-engineio's
    own socket, ACCEL=off, closes the WebSocket after its CLOSE packet only when the reader
    gives up, ping interval + timeout later.)"""
    yield from _heartbeat(tmp_path_factory, "engine-patient", ping_timeout=5)


async def test_a_server_side_disconnect_sends_close_and_closes_the_websocket(
    patient_server: LiveServer,
) -> None:
    async with websockets.connect(ws_url(patient_server)) as ws:
        assert (await raw.frame(ws)).startswith("0{")
        await ws.send("40")  # no token: AUTH_TIMEOUT (1 s) later the server lets go
        assert (await raw.frame(ws)).startswith("40{")
        frames: list[str] = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frame = await raw.frame(ws, timeout=9)
                if frame == "2":  # a live client: pings answered, so only the server ends it
                    await raw.pong(ws)
                else:
                    frames.append(frame)
    events = [f for f in frames if f.startswith("42")]
    assert events and json.loads(events[0][2:])[0] == "authentication_error"
    assert json.loads(events[0][2:])[1]["code"] == "TOKEN_MISSING"
    # Socket.IO's DISCONNECT, then Engine.IO's CLOSE, after the error and in that order.
    assert frames.index("41") > frames.index(events[0])
    assert frames[-1] == "1"


async def test_dead_sessions_are_released(heartbeat_server: LiveServer, token: str) -> None:
    before = await metric(heartbeat_server, "huddle_gateway_connections")
    sockets = [await websockets.connect(ws_url(heartbeat_server)) for _ in range(5)]
    try:
        for ws in sockets:
            await open_and_authenticate(ws, token)
        assert await metric(heartbeat_server, "huddle_gateway_connections") == before + 5
        # Half of them vanish without a close handshake, half close politely.
        for ws in sockets[:2]:
            ws.transport.abort()
        for ws in sockets[2:]:
            await ws.close()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if await metric(heartbeat_server, "huddle_gateway_connections") == before:
                break
            await asyncio.sleep(0.2)
        assert await metric(heartbeat_server, "huddle_gateway_connections") == before
    finally:
        for ws in sockets:
            await ws.close()


async def test_a_direct_websocket_from_a_disallowed_origin_is_refused(
    heartbeat_server: LiveServer, token: str
) -> None:
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(
            ws_url(heartbeat_server), additional_headers={"Origin": "https://evil.example"}
        ):
            pass
    async with websockets.connect(
        ws_url(heartbeat_server), additional_headers={"Origin": heartbeat_server.url}
    ) as ws:
        await open_and_authenticate(ws, token)


async def test_a_wrong_protocol_version_is_refused(heartbeat_server: LiveServer) -> None:
    url = ws_url(heartbeat_server).replace("EIO=4", "EIO=3")
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url):
            pass


async def test_an_unreadable_packet_gets_bad_request_and_the_socket_carries_on(
    heartbeat_server: LiveServer, token: str
) -> None:
    async with websockets.connect(ws_url(heartbeat_server)) as ws:
        await open_and_authenticate(ws, token)
        for junk in ('42["resume",{"lastEventId":', "49", '42["resume"]extra'):
            await ws.send(junk)
            frame = await raw.frame(ws)
            while frame == "2":  # a heartbeat ping may come first
                await ws.send("3")
                frame = await raw.frame(ws)
            assert frame.startswith('42["error"'), (junk, frame)
            assert json.loads(frame[2:])[1]["code"] == "BAD_REQUEST"
        await ws.send('421["resume",{"lastEventId":0}]')  # still served
        frame = await raw.frame(ws)
        for _ in range(10):
            if frame.startswith("43"):
                break
            if frame == "2":
                await ws.send("3")
            frame = await raw.frame(ws)
        assert json.loads(frame[3:])[0]["ok"] is True
    assert "Traceback" not in heartbeat_server.log_text()


@pytest.mark.parametrize(
    "junk",
    [
        '40{"token":',  # a Socket.IO CONNECT whose JSON never ends
        "9",  # no such Engine.IO packet type
        "x",  # not Engine.IO at all
    ],
)
async def test_an_unreadable_packet_before_connecting_closes_the_session(
    heartbeat_server: LiveServer, junk: str
) -> None:
    async with websockets.connect(ws_url(heartbeat_server)) as ws:
        assert (await raw.frame(ws)).startswith("0{")
        await ws.send(junk)
        frames: list[str] = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frames.append(await raw.frame(ws))
        assert not any(frame.startswith("40") for frame in frames), frames
    assert "Traceback" not in heartbeat_server.log_text()
