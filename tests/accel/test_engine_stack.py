"""The gateway's Socket.IO stack on its own: `LeanSocketIOServer` + `FastManager` + uvicorn's
`FastWebSocketProtocol`, served by a real uvicorn on a real socket, with python-socketio's
own client over WebSocket and over long-polling.

What a user of these classes would notice if they broke: a broadcast with bytes in it
(python-socketio's binary path) must arrive intact, in order with the text events around
it, on both transports; and a socket's own emits and room broadcasts interleave in the
order they were made.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio
import uvicorn
import websockets
import websockets.sync.client

from huddle.accel import uvicorn as accel_uvicorn
from huddle.accel.engineio import LeanSocketIOServer
from huddle.accel.socketio import FastManager
from huddle.accel.uvicorn import FastHttpToolsProtocol, FastWebSocketProtocol


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["take_over", "reparse"])
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, socketio.AsyncServer]]:
    """The stack behind `huddle serve`'s HTTP protocol (upgrades handed over parsed,
    `take_over`) and behind uvicorn's own (the upgrade request written out and parsed again)."""
    # A short heartbeat: python-engineio parks a long-poll for ping interval +
    # timeout after the client's CLOSE, which the polling client's disconnect awaits.
    sio = LeanSocketIOServer(
        async_mode="asgi", client_manager=FastManager(), ping_interval=1, ping_timeout=1
    )

    sio.environs = {}  # type: ignore[attr-defined]

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        sio.environs[sid] = environ  # type: ignore[attr-defined]
        await sio.enter_room(sid, "room")

    port = _free_port()
    config = uvicorn.Config(
        socketio.ASGIApp(sio),
        host="127.0.0.1",
        port=port,
        ws=FastWebSocketProtocol,
        http=FastHttpToolsProtocol if request.param == "take_over" else "httptools",
        ws_ping_interval=None,
        proxy_headers=False,  # as `huddle serve`: TRUSTED_PROXIES decides, not uvicorn
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", sio
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 10)


async def _client(url: str, transports: list[str]) -> tuple[socketio.AsyncClient, list[Any]]:
    client = socketio.AsyncClient(reconnection=False)
    received: list[Any] = []

    @client.on("*")
    async def any_event(event: str, data: Any) -> None:
        received.append((event, data))

    await client.connect(url, transports=transports, wait_timeout=5)
    return client, received


async def _until(received: list[Any], count: int) -> None:
    async with asyncio.timeout(5):
        while len(received) < count:
            await asyncio.sleep(0.01)


async def _room_holds(sio: socketio.AsyncServer, count: int) -> None:
    """Wait until `count` sockets are in "room" (the connect handler puts them there)."""
    async with asyncio.timeout(5):
        while len(list(sio.manager.get_participants("/", "room"))) != count:
            await asyncio.sleep(0.01)


def _ws_url(url: str) -> str:
    """A direct Engine.IO 4 WebSocket, as socket.io-client opens with `["websocket"]`."""
    return url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]])
async def test_binary_and_text_broadcasts_arrive_intact_and_in_order(
    stack: tuple[str, socketio.AsyncServer], transports: list[str]
) -> None:
    url, sio = stack
    client, received = await _client(url, transports)
    try:
        await sio.emit("note", {"n": 1}, to="room")
        await sio.emit("blob", b"\x00\x01binary\xff", to="room")
        await sio.emit("note", {"n": 2, "text": "héllo"}, to="room")
        await _until(received, 3)
        assert received == [
            ("note", {"n": 1}),
            ("blob", b"\x00\x01binary\xff"),
            ("note", {"n": 2, "text": "héllo"}),
        ]
    finally:
        await client.disconnect()


async def test_own_emits_and_broadcasts_keep_their_order(
    stack: tuple[str, socketio.AsyncServer],
) -> None:
    url, sio = stack
    client, received = await _client(url, ["websocket"])
    try:
        sid = client.get_sid()
        for n in range(20):
            target = sid if n % 2 else "room"
            await sio.emit("seq", n, to=target)
        await _until(received, 20)
        assert [data for _, data in received] == list(range(20))
    finally:
        await client.disconnect()


async def test_a_flush_written_in_slices_delivers_everything_in_order(
    stack: tuple[str, socketio.AsyncServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush writes a few connections per loop turn (2 here, 256 in production); events
    made between its slices, to the room and to single sockets, still reach every socket
    once each and in the order they were made."""
    monkeypatch.setattr(accel_uvicorn, "FLUSH_SLICE", 2)
    url, sio = stack
    clients = [await _client(url, ["websocket"]) for _ in range(7)]
    try:
        await _room_holds(sio, 7)
        sids = [client.get_sid() for client, _ in clients]
        expected: list[list[int]] = [[] for _ in clients]
        for n in range(40):
            if n % 5 == 4:  # now and then, one socket alone
                target = n % len(clients)
                await sio.emit("seq", n, to=sids[target])
                expected[target].append(n)
            else:
                await sio.emit("seq", n, to="room")
                for events in expected:
                    events.append(n)
            if n % 3 == 0:
                await asyncio.sleep(0)  # a loop turn: the slices under way go on
        for (_, received), events in zip(clients, expected, strict=True):
            await _until(received, len(events))
            assert [data for _, data in received] == events
    finally:
        for client, _ in clients:
            await client.disconnect()


async def test_a_disconnected_socket_leaves_every_room_and_the_others_stay(
    stack: tuple[str, socketio.AsyncServer],
) -> None:
    url, sio = stack
    clients = [await _client(url, ["websocket"]) for _ in range(3)]
    gone, _ = clients[0]
    gone_sid = gone.get_sid(namespace="/")
    server_sids = [sid for sid, _ in sio.manager.get_participants("/", "room")]
    assert len(server_sids) == 3 and gone_sid in server_sids
    server_gone = gone_sid
    await sio.enter_room(server_gone, "extra")
    try:
        await gone.disconnect()
        await _room_holds(sio, 2)
        assert sio.manager.get_rooms(server_gone, "/") == []
        assert "extra" not in sio.manager.rooms.get("/", {})  # its last member left
        await sio.emit("still", "here", to="room")
        for _, received in clients[1:]:
            await _until(received, 1)
            assert received == [("still", "here")]
    finally:
        for client, _ in clients[1:]:
            await client.disconnect()


async def test_a_closed_websocket_is_freed_without_the_cyclic_collector(
    stack: tuple[str, socketio.AsyncServer],
) -> None:
    """A closed connection's objects go when their last reference does: nothing of it
    waits, for hours on a busy gateway, for a full collection (docs/benchmarks.md)."""
    url, sio = stack
    # engine.io's ping-timeout sweep holds the socket it looked at last for a while
    # (a reference, not a cycle); it is not what this is about.
    sio.eio.start_service_task = False
    kinds = FastWebSocketProtocol | FastHttpToolsProtocol
    before = {id(o) for o in gc.get_objects() if isinstance(o, kinds)}
    gc.disable()
    try:
        client, _ = await _client(url, ["websocket"])
        await _room_holds(sio, 1)
        # The upgrade's HTTP protocol (handed over) is gone already.
        assert not [
            o for o in gc.get_objects() if type(o) is FastHttpToolsProtocol and id(o) not in before
        ]
        mine = [
            weakref.ref(o)
            for o in gc.get_objects()
            if isinstance(o, FastWebSocketProtocol) and id(o) not in before
        ]
        assert len(mine) == 1
        await client.disconnect()
        await _room_holds(sio, 0)
        sio.environs.clear()  # type: ignore[attr-defined]  # the test's own reference
        async with asyncio.timeout(5):
            while mine[0]() is not None:
                await asyncio.sleep(0.02)
    finally:
        gc.enable()


async def test_a_second_connect_on_the_same_session_is_refused_and_the_first_kept(
    stack: tuple[str, socketio.AsyncServer],
) -> None:
    url, sio = stack
    ws_url = _ws_url(url)
    async with websockets.connect(ws_url) as ws:
        assert str(await ws.recv()).startswith("0{")
        await ws.send("40")
        assert str(await ws.recv()).startswith("40{")
        await ws.send("40")  # the namespace again, on the same Engine.IO session
        assert str(await ws.recv()).startswith("44")  # CONNECT_ERROR
        await sio.emit("once", 1, to="room")
        assert await asyncio.wait_for(ws.recv(), 5) == '42["once",1]'
        assert len(list(sio.manager.get_participants("/", "room"))) == 1


async def test_a_peer_that_stops_reading_is_dropped_when_disconnected(
    stack: tuple[str, socketio.AsyncServer],
) -> None:
    url, sio = stack
    host, port = url.removeprefix("http://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=raw)
    try:
        writer.write(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            b"Host: " + host.encode() + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        opened = b""
        async with asyncio.timeout(5):  # the 101 response and the OPEN packet
            while b'"sid"' not in opened:
                opened += await reader.read(4096)
        mask = b"\x01\x02\x03\x04"
        writer.write(b"\x81\x82" + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(b"40")))
        await writer.drain()
        await _room_holds(sio, 1)
        [(sid, eio_sid)] = list(sio.manager.get_participants("/", "room"))
        # ~6 MB the peer never reads: the server's transport pauses, bytes pile up.
        for _ in range(90):
            await sio.emit("big", "x" * 65_536, to=sid)
        await asyncio.sleep(0.2)
        # Disconnecting must not wait for the peer to read its way to a close frame.
        await asyncio.wait_for(sio.eio.disconnect(eio_sid), 5)
        assert eio_sid not in sio.eio.sockets
        assert not sio.manager.is_connected(sid, "/")
    finally:
        writer.close()


async def test_the_socket_sees_the_upgrade_request_as_sent(
    stack: tuple[str, socketio.AsyncServer],
) -> None:
    url, sio = stack
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        url + "/?team=7&name=Zo%C3%AB",
        transports=["websocket"],
        headers={"X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer abc"},
        wait_timeout=5,
    )
    try:
        environ = sio.environs[client.get_sid()]  # type: ignore[attr-defined]
        scope = environ["asgi.scope"]
        assert scope["type"] == "websocket"
        assert scope["path"] == "/socket.io/"
        query = scope["query_string"].decode()
        assert "team=7" in query and "name=Zo%C3%AB" in query and "transport=websocket" in query
        assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"
        assert environ["HTTP_AUTHORIZATION"] == "Bearer abc"
        assert all(name == name.lower() for name, _ in scope["headers"])
        assert scope["client"][0] == "127.0.0.1" and scope["server"][1] == int(
            url.rsplit(":", 1)[1]
        )
    finally:
        await client.disconnect()


_UPGRADE = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
    b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (_UPGRADE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), b"400"),
        (_UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="), b"400"),  # 5 bytes
        (_UPGRADE.replace(b"Version: 13", b"Version: 8"), b"400"),
        (_UPGRADE + b"Sec-WebSocket-Version: 13\r\n", b"400"),  # twice
        (_UPGRADE.replace(b"GET", b"POST"), b"405"),
        (_UPGRADE.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"), b"101"),
        (_UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: WebSocket"), b"101"),
        # This stack negotiates compression (uvicorn's default): an offer is answered,
        # a malformed one refused.
        (_UPGRADE + b"Sec-WebSocket-Extensions: permessage-deflate\r\n", b"101"),
        (_UPGRADE + b"Sec-WebSocket-Extensions: ;;\r\n", b"400"),
    ],
)
async def test_upgrades_are_accepted_or_refused_as_websockets_would(
    stack: tuple[str, socketio.AsyncServer], request_bytes: bytes, status: bytes
) -> None:
    """What the lean accept (plain requests) and `websockets`' own (anything else) answer:
    refusals with their HTTP status, and a 101 with the RFC 6455 accept key, compression
    negotiated only when offered, followed by the Engine.IO OPEN packet."""
    url, _ = stack
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request_bytes + b"\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    try:
        assert head.startswith(b"HTTP/1.1 " + status), head
        if status == b"101":
            lines = head.lower().split(b"\r\n")
            assert b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in lines
            offered = b"permessage-deflate" in request_bytes
            negotiated = [line for line in lines if line.startswith(b"sec-websocket-extensions:")]
            assert [line.split(b";")[0] for line in negotiated] == (
                [b"sec-websocket-extensions: permessage-deflate"] if offered else []
            )
            if not offered:
                frame = await asyncio.wait_for(reader.readexactly(2), 5)
                body = await asyncio.wait_for(reader.readexactly(frame[1] & 0x7F), 5)
                assert body.startswith(b'0{"sid":'), body
    finally:
        writer.close()


async def test_a_long_loop_turn_of_broadcasts_is_written_as_it_goes(
    stack: tuple[str, socketio.AsyncServer],
) -> None:
    """Broadcasts made in one loop turn that runs long (a burst of events, each its own
    unit of work, none yielding) reach the client while the turn is still running,
    not all at its end; and in order."""
    url, sio = stack
    ws_url = _ws_url(url)
    arrivals: list[tuple[float, str]] = []
    ready = threading.Event()

    def client() -> None:  # a thread of its own: it reads while the server's loop is busy
        # No permessage-deflate (as `huddle serve` by default): shared frames, the fast path.
        with websockets.sync.client.connect(ws_url, compression=None) as ws:
            assert str(ws.recv(5)).startswith("0{")
            ws.send("40")
            assert str(ws.recv(5)).startswith("40{")
            ready.set()
            while len(arrivals) < 3:
                frame = str(ws.recv(10))
                arrivals.append((time.monotonic(), frame))

    reader = threading.Thread(target=client, daemon=True)
    reader.start()
    assert await asyncio.to_thread(ready.wait, 5)
    await _room_holds(sio, 1)
    await sio.emit("burst", 1, to="room")  # FastManager.emit never suspends here
    time.sleep(0.03)  # the rest of the turn's work, blocking the loop
    await sio.emit("burst", 2, to="room")
    time.sleep(0.03)
    await sio.emit("burst", 3, to="room")
    turn_ended = time.monotonic()
    await asyncio.to_thread(reader.join, 10)
    assert [frame for _, frame in arrivals] == [f'42["burst",{n}]' for n in (1, 2, 3)]
    first_arrival = arrivals[0][0]
    assert first_arrival < turn_ended - 0.02, (first_arrival, turn_ended)
