"""Redis going away: local clients keep working; other instances catch up when it returns.

Two `huddle serve` processes share PostgreSQL and Redis, but the first reaches
Redis through a relay the test can cut. While it is cut, a change made on the
first instance still reaches its own socket at once; when the relay returns,
the backlog reaches the socket on the second instance, in order, with nothing
lost.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.factories import Factory
from tests.gateway.backend_api import TcpRelay
from tests.gateway.live import LiveServer, SocketProbe

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


async def test_events_survive_a_redis_outage(
    tmp_path: Path, postgres_server_url: str, redis_url: str, redis_prefix: str
) -> None:
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    relay = TcpRelay(redis_port)
    await relay.start()
    shared = {
        "DATABASE_URL": postgres_server_url.replace("postgresql://", "postgresql+asyncpg://", 1),
        "REDIS_PREFIX": f"{redis_prefix}-outage",
        "JWT_LEEWAY": "0",
    }
    first = LiveServer(
        tmp_path / "one", env={**shared, "REDIS_URL": f"redis://127.0.0.1:{relay.port}/0"}
    )
    second = LiveServer(tmp_path / "two", env={**shared, "REDIS_URL": redis_url})
    probes: list[SocketProbe] = []
    try:
        first.start()
        second.start()
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as api:
            factory = Factory(api)
            owner = await factory.user()
            mate = await factory.user()
            team = await factory.team(owner)
            await factory.member(team["id"], owner, mate)
            local = await SocketProbe(first.url).connect({"token": owner.access_token})
            remote = await SocketProbe(second.url).connect({"token": mate.access_token})
            probes += [local, remote]
            await local.next("authenticated", timeout=10)
            await remote.next("authenticated", timeout=10)

            before = await factory.task(team["id"], owner, title="before")
            assert (await remote.next("task_created", timeout=10))["task"]["id"] == before["id"]
            assert (await local.next("task_created", timeout=10))["task"]["id"] == before["id"]

            await relay.stop()
            during = [await factory.task(team["id"], owner, title=f"during {i}") for i in range(3)]
            for task in during:
                got = await local.next("task_created", timeout=5)
                assert got["task"]["id"] == task["id"]
            ready = await api.get("/readyz")
            assert ready.status_code == 503 and "redis" in ready.json()["error"]["details"]["down"]

            await relay.start()
            for task in during:
                got = await remote.next("task_created", timeout=15)
                assert got["task"]["id"] == task["id"]
            after = await factory.task(team["id"], owner, title="after")
            assert (await remote.next("task_created", timeout=10))["task"]["id"] == after["id"]
    finally:
        for probe in probes:
            await probe.close()
        first.stop()
        second.stop()
        await relay.stop()
