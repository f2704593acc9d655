"""Two processes behind one Redis: `huddle serve` and a `huddle gateway` that uses it as backend.

Whichever instance a member is connected to, the API's changes reach them
through the Redis event stream, and a logout everywhere closes their sockets
on every instance.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import Factory
from tests.gateway.live import LiveServer, SocketProbe

pytestmark = pytest.mark.redis


@pytest.fixture
def cluster(
    tmp_path: Path, redis_url: str, redis_prefix: str, unique: str
) -> Iterator[tuple[LiveServer, list[LiveServer]]]:
    shared = {"REDIS_URL": redis_url, "REDIS_PREFIX": f"{redis_prefix}-{unique}"}
    serve = LiveServer(tmp_path / "serve", env=shared)
    gateway = LiveServer(tmp_path / "gw", role="gateway", env={**shared, "BACKEND_URL": serve.url})
    try:
        for server in (serve, gateway):
            server.launch()
        for server in (serve, gateway):
            server.wait_healthy()
        yield serve, [serve, gateway]
    finally:
        for server in (gateway, serve):
            server.stop()
    for server in (serve, gateway):
        assert "Traceback" not in server.log_text(tail=None)


async def test_changes_and_revocations_reach_sockets_on_every_instance(
    cluster: tuple[LiveServer, list[LiveServer]],
) -> None:
    api, gateways = cluster
    async with httpx.AsyncClient(base_url=api.url) as client:
        factory = Factory(client)
        owner = await factory.user()
        team = await factory.team(owner)
        probes = [SocketProbe(gateway.url) for gateway in gateways]
        try:
            for probe in probes:
                await probe.connect({"token": owner.access_token})
                body = await probe.next("authenticated")
                assert body["degraded"] is False
                assert [t["id"] for t in body["teams"]] == [team["id"]]

            task = await factory.task(team["id"], owner)
            for probe in probes:
                assert (await probe.next("task_created"))["task"]["id"] == task["id"]

            started = time.monotonic()
            response = await client.post("/api/auth/logout-all", headers=owner.headers)
            assert response.status_code == 204
            for probe in probes:
                error = await probe.next("authentication_error", timeout=2)
                assert error["code"] == "TOKEN_REVOKED"
                await probe.gone(timeout=2)
            assert time.monotonic() - started < 1.5
        finally:
            for probe in probes:
                await probe.close()
