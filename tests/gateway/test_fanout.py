"""The broadcast fast path (gateway/manager.py, gateway/transport.py) keeps the contract.

Every recipient gets every event exactly once and in order, whichever way it is
written to: shared frames for idle WebSocket connections, engine.io's own
queue for long-polling, and per-connection frames when permessage-deflate was
negotiated. The stock python-socketio path is the reference.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import Factory
from tests.gateway.live import LiveServer, SocketProbe

BURST = 120
SLICE = 12


def _deliveries(server: LiveServer) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    counts = {"shared": 0.0, "queued": 0.0}
    for line in text.splitlines():
        if line.startswith("huddle_gateway_fanout_deliveries_total{"):
            path = line.split('path="', 1)[1].split('"', 1)[0]
            counts[path] = float(line.rsplit(" ", 1)[1])
    return counts


async def _burst_reaches_everyone(
    server: LiveServer, transports: list[list[str]], **client_options: Any
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        factory = Factory(client)
        owner = await factory.user()
        team = await factory.team(owner)
        members = []
        for _ in transports:
            member = await factory.user()
            await factory.member(team["id"], owner, member)
            members.append(member)
        probes = []
        try:
            for member, transport in zip(members, transports, strict=True):
                probe = SocketProbe(server.url, **client_options)
                probes.append(probe)
                await probe.connect({"token": member.access_token}, transports=transport)
                await probe.next("authenticated", timeout=10)
            # Interleave a per-socket emit (an ack) with the broadcasts on one socket.
            answer = await probes[0].call("team_presence", {"teamId": team["id"]})
            assert answer["ok"] is True
            # python-engineio's client refuses a poll response of more than 16
            # packets, so the burst goes out in slices a polling client can take.
            first = None
            for _ in range(BURST // SLICE):
                response = await client.post(
                    f"/bench/broadcast?room=team:{team['id']}&count={SLICE}&size=200"
                )
                assert response.status_code == 200, response.text
                first = first or response.json()["firstEventId"]
                await asyncio.sleep(0.05)
            assert first is not None
            for probe in probes:
                got = [await probe.next("task_updated", timeout=20) for _ in range(BURST)]
                assert [e["eventId"] for e in got] == list(range(first, first + BURST))
                assert all(e["teamId"] == team["id"] for e in got)
        finally:
            for probe in probes:
                await probe.close()


@pytest.mark.parametrize("mode", ["auto", "off"])
async def test_a_burst_reaches_websocket_and_polling_clients_in_order(
    tmp_path: Path, mode: str
) -> None:
    env = {"BENCH_ENDPOINTS": "true", "ACCEL": mode, "MAX_CONNECTIONS_PER_USER": "5"}
    with LiveServer(tmp_path / mode, env=env) as server:
        await _burst_reaches_everyone(
            server, [["websocket"], ["websocket"], ["polling"], ["polling", "websocket"]]
        )
        deliveries = _deliveries(server)
    if mode == "auto":
        # Most deliveries went out as the shared frame; the polling client's did not.
        assert deliveries["shared"] >= 2 * BURST
        assert deliveries["queued"] >= BURST
    else:
        assert deliveries == {"shared": 0.0, "queued": 0.0}


async def test_compressed_connections_get_every_event_in_order(tmp_path: Path) -> None:
    env = {"BENCH_ENDPOINTS": "true", "WS_COMPRESSION": "true"}
    with LiveServer(tmp_path / "deflate", env=env) as server:
        # The client offers permessage-deflate (aiohttp's `compress`), the server accepts.
        await _burst_reaches_everyone(
            server,
            [["websocket"], ["websocket"]],
            websocket_extra_options={"compress": 15},
        )
        # Compressed connections never take a shared (uncompressed) frame.
        assert _deliveries(server)["shared"] == 0
