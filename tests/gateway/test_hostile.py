"""Hostile clients on the wire (issue 10): each hole a probe found, kept closed.

Raw Engine.IO / Socket.IO frames against a real `huddle serve` with the
default event limits, on the lean WebSocket path and (long-polling) on
engine.io's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import websockets

from tests.factories import Factory, TestUser
from tests.gateway.live import LiveServer, SocketProbe
from tests.gateway.raw import (
    metric,
    next_ack,
    next_event,
    open_and_authenticate,
    until_ended,
    ws_url,
)

FORGED_ENVIRON = {"asgi.scope": {"client": ["198.51.100.5", 1]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Default event limits (20/s, burst 50); connection limits out of the way."""
    with LiveServer(
        tmp_path_factory.mktemp("hostile"),
        env={
            "LOG_LEVEL": "info",
            "AUTH_TIMEOUT": "1",
            "MAX_CONNECTIONS_LOCALHOST": "1000",
            "CONNECTION_COOLDOWN_LOCALHOST": "1",
        },
    ) as live:
        yield live
        log = live.log_text(tail=None)
    assert "Traceback" not in log, log[-3000:]
    assert "198.51.100.5" not in log  # no forged environ ever reached a handler


@pytest.fixture
async def factory(server: LiveServer) -> AsyncIterator[Factory]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield Factory(client)


async def _team_of_two(factory: Factory) -> tuple[TestUser, TestUser, int]:
    owner, mate = await factory.user(), await factory.user()
    team = await factory.team(owner)
    await factory.member(team["id"], owner, mate)
    return owner, mate, int(team["id"])


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _online(server: LiveServer, watcher: TestUser, team: int) -> list[int]:
    probe = SocketProbe(server.url)
    try:
        await probe.connect({"token": watcher.access_token})
        await probe.next("authenticated")
        ack = await probe.call("team_presence", {"teamId": team})
        return list(ack["data"]["online"])
    finally:
        await probe.close()


@pytest.mark.parametrize(
    "packet",
    [
        '42["connect",{forged},{{"token":"{token}"}}]',
        '421["connect",{forged},{{"token":"{token}"}}]',
        '42["disconnect","transport close"]',
        '422["disconnecting"]',
        '42["connect_error",{{}}]',
        '42["newListener","authenticated"]',
        '42["removeListener","authenticated"]',
    ],
)
async def test_reserved_event_names_answer_bad_request_and_reach_no_handler(
    server: LiveServer, factory: Factory, packet: str
) -> None:
    """A forged `connect` ran the connect handler with an environ the client wrote and
    left a session nobody freed; a forged `disconnect` made a connected user look offline."""
    owner, mate, team = await _team_of_two(factory)
    before = await metric(server, "huddle_gateway_connections")
    async with websockets.connect(ws_url(server)) as ws:
        await open_and_authenticate(ws, mate.access_token)
        await ws.send(packet.format(forged=json.dumps(FORGED_ENVIRON), token=mate.access_token))
        # The `error` event comes first, then the failed acknowledgement when one was asked.
        name, error = await next_event(ws)
        assert (name, error["code"]) == ("error", "BAD_REQUEST")
        if packet[2:3].isdigit():
            ack = await next_ack(ws, int(packet[2:3]))
            assert ack["ok"] is False and ack["error"]["code"] == "BAD_REQUEST"
        assert await metric(server, "huddle_gateway_connections") == before + 1
        assert mate.id in await _online(server, owner, team)  # still online
        await ws.send('421["resume",{"lastEventId":0}]')  # and still served
        assert (await next_ack(ws, 1))["ok"] is True
    deadline = time.monotonic() + 5
    while await metric(server, "huddle_gateway_connections") != before:
        assert time.monotonic() < deadline, "a session outlived its connection"
        await asyncio.sleep(0.1)
    assert mate.id not in await _online(server, owner, team)


async def test_binary_attachments_are_refused_without_being_buffered(
    server: LiveServer, factory: Factory
) -> None:
    """1,200 binary frames of 60 KB announced by one `451000000-` packet grew RSS by 49 MiB."""
    user = await factory.user()
    assert server.process is not None
    rss_before = _rss_kib(server.process.pid)
    async with websockets.connect(ws_url(server), max_size=2**20) as ws:
        await open_and_authenticate(ws, user.access_token)
        await ws.send('451000000-7["resume",{"_placeholder":true,"num":0}]')
        assert (await next_event(ws))[1]["code"] == "BAD_REQUEST"
        ack = await next_ack(ws, 7)
        assert ack["error"]["code"] == "BAD_REQUEST"
        assert "Binary" in ack["error"]["message"]
        chunk = os.urandom(60_000)
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(1_200):
                await ws.send(b"\x04" + chunk)  # Engine.IO binary MESSAGE frames
        frames = await until_ended(ws, timeout=10)  # a flood of refusals ends in a disconnect
        assert any(f.startswith('42["authentication_error"') for f in frames if isinstance(f, str))
    grown_kib = _rss_kib(server.process.pid) - rss_before
    assert grown_kib < 24 * 1024, f"RSS grew {grown_kib} KiB"


@pytest.mark.parametrize(
    "junk",
    ["42{}", "42[]", "42[1,2]", '42"name"', "42" + "[" * 5000 + "]" * 5000, "43[]", '42/x,["a"]'],
)
async def test_malformed_packets_answer_bad_request_and_keep_the_socket(
    server: LiveServer, factory: Factory, junk: str
) -> None:
    user = await factory.user()
    async with websockets.connect(ws_url(server)) as ws:
        await open_and_authenticate(ws, user.access_token)
        for _ in range(3):
            await ws.send(junk)
            name, error = await next_event(ws)
            assert (name, error["code"]) == ("error", "BAD_REQUEST"), junk
        await ws.send('421["resume",{"lastEventId":0}]')
        assert (await next_ack(ws, 1))["ok"] is True
    assert "is not connected" not in server.log_text(tail=None)


async def test_a_packet_before_the_socketio_connect_ends_the_session(server: LiveServer) -> None:
    for junk in ('42["authenticate",{}]', "41", b"\x04binary"):
        async with websockets.connect(ws_url(server)) as ws:
            assert (await asyncio.wait_for(ws.recv(), 5)).startswith("0{")  # type: ignore[union-attr]
            await ws.send(junk)
            frames = await until_ended(ws)
            assert not any(str(f).startswith("40") for f in frames), (junk, frames)
    assert "is not connected" not in server.log_text(tail=None)


async def test_a_long_polling_post_above_max_payload_answers_413_at_once(
    server: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        opened = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        sid = json.loads(opened.text[1:])["sid"]
        started = time.monotonic()
        too_big = "4" + "x" * 70_000
        for body in (too_big.encode(), _chunks(too_big.encode())):
            response = await client.post(
                "/socket.io/",
                params={"EIO": "4", "transport": "polling", "sid": sid},
                content=body,
                headers={"content-type": "text/plain;charset=UTF-8"},
            )
            assert response.status_code == 413
        assert time.monotonic() - started < 3


async def test_a_long_polling_post_to_a_session_just_closed_answers_400_not_500(
    server: LiveServer,
) -> None:
    """The client's CLOSE ends the session; a POST racing it gets engine.io's 400."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        opened = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        sid = json.loads(opened.text[1:])["sid"]
        params = {"EIO": "4", "transport": "polling", "sid": sid}
        headers = {"content-type": "text/plain;charset=UTF-8"}
        closing = await client.post("/socket.io/", params=params, content=b"1", headers=headers)
        assert closing.status_code == 200
        late = await client.post("/socket.io/", params=params, content=b"40", headers=headers)
        assert late.status_code == 400
    assert "Traceback" not in server.log_text(tail=None)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    """The body without a Content-Length (chunked transfer encoding)."""
    for start in range(0, len(body), 8192):
        yield body[start : start + 8192]


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Three attempts per loopback client, no refill to speak of."""
    env = {
        "AUTH_TIMEOUT": "1",
        "MAX_CONNECTIONS_LOCALHOST": "3",
        "CONNECTION_COOLDOWN_LOCALHOST": "600000",
    }
    with LiveServer(tmp_path_factory.mktemp("tight"), env=env) as live:
        yield live


async def test_sessions_that_never_send_connect_are_bounded_timed_out_and_charged(
    tight: LiveServer,
) -> None:
    """150 Engine.IO sessions without a Socket.IO CONNECT held 150 descriptors for ever,
    and a normal connection was still accepted afterwards."""
    async with httpx.AsyncClient(base_url=tight.url) as client:
        user = await Factory(client).user()
    url = ws_url(tight)
    held = [await websockets.connect(url) for _ in range(3)]
    try:
        await _held_sessions_end(tight, url, held, user)
    finally:
        for ws in held:
            await ws.close()


async def _held_sessions_end(
    tight: LiveServer, url: str, held: list[websockets.ClientConnection], user: TestUser
) -> None:
    for ws in held:
        assert str(await asyncio.wait_for(ws.recv(), 5)).startswith("0{")
    with pytest.raises(websockets.InvalidStatus):  # a fourth, while three wait: refused
        async with websockets.connect(url):
            pass
    started = time.monotonic()
    for ws in held:  # AUTH_TIMEOUT (1 s) later the server ends each of them
        await until_ended(ws)
    assert time.monotonic() - started < 4
    # Each counted as a connection attempt: the client's bucket (3) is spent.
    probe = SocketProbe(tight.url)
    try:
        await probe.connect({"token": user.access_token})
        name, error = await probe.first("authenticated", "authentication_error")
        assert (name, error["code"]) == ("authentication_error", "RATE_LIMITED")
    finally:
        await probe.close()
