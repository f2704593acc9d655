"""`huddle gateway` as an operator runs it: an empty event log, `/readyz` under faults, SIGTERM.

One `huddle api` and one `huddle gateway` share Redis; the gateway reaches
Redis through a relay the test can cut. With nothing ever written to the event
log, `authenticated.lastEventId`, `sync_complete.lastEventId` and the `resume`
acknowledgement all say 0 (SPEC §4.3: integers, 0 when the log is empty).
`/readyz` names Redis, then the backend too, as each goes away (SPEC §4.5),
and each process drains and exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.factories import Factory
from tests.gateway.backend_api import TcpRelay
from tests.gateway.live import LiveServer, SocketProbe

pytestmark = [pytest.mark.redis]


async def expect_ready(url: str, status: int, **checks: str) -> None:
    """`/readyz` answers `status` with these checks within 10 s (a fault takes a moment
    to be noticed, a recovery a reconnect)."""
    deadline = asyncio.get_running_loop().time() + 10
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while True:
            ready = await client.get("/readyz")
            seen = (ready.status_code, ready.json()["checks"])
            if seen == (status, checks) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    assert seen == (status, checks)


async def test_gateway_with_an_empty_log_then_redis_and_backend_down(
    tmp_path: Path, redis_url: str, redis_prefix: str, unique: str
) -> None:
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    relay = TcpRelay(redis_port)
    await relay.start()
    prefix = f"{redis_prefix}-ops-{unique}"  # a stream of its own: nothing logged yet
    api = LiveServer(
        tmp_path / "api", role="api", env={"REDIS_URL": redis_url, "REDIS_PREFIX": prefix}
    )
    gateway = LiveServer(
        tmp_path / "gateway",
        role="gateway",
        env={
            "BACKEND_URL": api.url,
            "BACKEND_TIMEOUT": "0.5",
            "REDIS_URL": f"redis://127.0.0.1:{relay.port}/0",
            "REDIS_PREFIX": prefix,
        },
    )
    servers = (api, gateway)
    probes = [SocketProbe(gateway.url)]
    statuses: dict[str, int | None] = {}
    try:
        for server in servers:
            server.launch()
        # In threads: the relay runs on this loop, and the gateway reads Redis as it starts.
        await asyncio.gather(*(asyncio.to_thread(server.wait_healthy) for server in servers))
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            user = await Factory(client).user()

        for probe in probes:
            await probe.connect({"token": user.access_token, "lastEventId": 0})
            assert (await probe.next("authenticated"))["lastEventId"] == 0
            assert await probe.next("sync_complete") == {"lastEventId": 0}
            ack = await probe.call("resume", {"lastEventId": 0})
            assert ack["ok"] is True and ack["data"]["lastEventId"] == 0
            assert await probe.next("sync_complete") == {"lastEventId": 0}

        await expect_ready(gateway.url, 200, backend="ok", redis="ok")
        await relay.stop()
        await expect_ready(gateway.url, 503, backend="ok", redis="down")
        statuses["api"] = await asyncio.to_thread(api.stop)
        await expect_ready(gateway.url, 503, backend="down", redis="down")
        await relay.start()
        await expect_ready(gateway.url, 503, backend="down", redis="ok")
        statuses["gateway"] = await asyncio.to_thread(gateway.stop)
    finally:
        for probe in probes:
            await probe.close()
        for server in servers:
            server.stop()
        await relay.stop()
    assert statuses == {"api": 0, "gateway": 0}, "SPEC §4.5: drained, exit 0"
    for server in servers:
        assert "Traceback" not in server.log_text(tail=None)
