"""Shutdown (SIGTERM) and `huddle gateway` on its own: health, degraded data, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import httpx

from tests.factories import Factory
from tests.gateway.live import LiveServer, SocketProbe, free_port


async def test_sigterm_tells_every_socket_to_come_back_later_with_jitter(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "serve").start()
    probes = [SocketProbe(server.url) for _ in range(4)]
    late = SocketProbe(server.url)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            user = await Factory(client).user()
        for probe in probes:
            await probe.connect({"token": user.access_token})
            await probe.next("authenticated")

        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        notices = [await probe.next("server_shutdown") for probe in probes]
        delays = [notice["retryAfter"] for notice in notices]
        assert all(isinstance(d, int) and 1000 <= d <= 5000 for d in delays)
        assert len(set(delays)) > 1, "each socket gets its own delay"

        # Still draining: a new socket is told the same, then let go.
        await late.connect({"token": user.access_token})
        assert 1000 <= (await late.next("server_shutdown"))["retryAfter"] <= 5000
        await late.gone()
        for probe in probes:
            await probe.gone(timeout=10)
    finally:
        for probe in [*probes, late]:
            await probe.close()
        started = time.monotonic()
        status = server.stop()
        assert time.monotonic() - started < 10
    assert status == 0, "SPEC §4.5: drained, the process exits with status 0"
    assert "Traceback" not in server.log_text(tail=None)


async def test_sigterm_is_prompt_with_long_polling_clients(tmp_path: Path) -> None:
    """Regression: a parked Engine.IO long-poll used to hold shutdown for uvicorn's 10 s."""
    server = LiveServer(tmp_path / "polls").start()
    connected = SocketProbe(server.url)
    left = SocketProbe(server.url)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            user = await Factory(client).user()
        for probe in (connected, left):
            await probe.connect({"token": user.access_token}, transports=["polling"])
            await probe.next("authenticated")
        # A client-initiated CLOSE parks the server side of its last poll. (The
        # python client then waits ~30 s for its own poll: don't wait for it.)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(left.client.disconnect(), 0.5)
        started = time.monotonic()
        assert server.stop() == 0  # SPEC §4.5: a drained shutdown exits 0
        assert time.monotonic() - started < 6, "shutdown waited for a parked long-poll"
        assert "graceful shutdown exceeded" not in server.log_text(tail=None)
    finally:
        await connected.close()
        await left.close()
        server.stop()


async def test_gateway_alone_degrades_when_the_backend_is_down_then_refreshes(
    tmp_path: Path,
) -> None:
    backend_port = free_port()
    api = LiveServer(tmp_path / "api", role="api", port=backend_port).start()
    async with httpx.AsyncClient(base_url=api.url) as client:
        factory = Factory(client)
        user = await factory.user()
        team = await factory.team(user)
        task = await factory.task(team["id"], user, assigneeId=user.id)
    api.stop()  # the backend goes away

    gateway = LiveServer(
        tmp_path / "gateway",
        role="gateway",
        env={"BACKEND_URL": api.url, "BACKEND_TIMEOUT": "0.5"},
    ).start()
    probe = SocketProbe(gateway.url)
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["backend"] == "down"
            assert "huddle_gateway_connections" in (await client.get("/metrics")).text

        started = time.monotonic()
        await probe.connect({"token": user.access_token})
        body = await probe.next("authenticated", timeout=5)
        assert time.monotonic() - started < 3
        assert body["degraded"] is True
        assert body["user"]["id"] == user.id
        assert (body["teams"], body["tasks"]) == ([], [])

        api = LiveServer(tmp_path / "api", role="api", port=backend_port).start()
        refreshed = await probe.next("data_refreshed", timeout=15)
        assert set(refreshed) == {"teams", "tasks"}
        assert [t["id"] for t in refreshed["teams"]] == [team["id"]]
        assert [t["id"] for t in refreshed["tasks"]] == [task["id"]]
        # It now sits in the team's room.
        ack = await probe.call("team_presence", {"teamId": team["id"]})
        assert ack["data"]["online"] == [user.id]
        await asyncio.sleep(0)
    finally:
        await probe.close()
        gateway.stop()
        api.stop()
    assert "Traceback" not in gateway.log_text(tail=None)
