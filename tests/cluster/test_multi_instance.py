"""Several processes, one PostgreSQL and one Redis: the scale-out shape of SPEC §1.

Two `huddle api` and two `huddle gateway` processes. A change made through
either API reaches the team's members on either gateway, in commit order; a
"logout everywhere" on one API disconnects the user's sockets on every
gateway; the connection buckets are shared through Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import Factory
from tests.gateway.live import LiveServer, SocketProbe

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server_url: str,
    redis_url: str,
    redis_prefix: str,
) -> Iterator[dict[str, LiveServer]]:
    root: Path = tmp_path_factory.mktemp("cluster")
    shared = {
        "DATABASE_URL": postgres_server_url.replace("postgresql://", "postgresql+asyncpg://", 1),
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"{redis_prefix}-cluster",
        "JWT_LEEWAY": "0",
        "MAX_CONNECTIONS_PER_USER": "50",
        # Loopback is a trusted proxy here, so X-Forwarded-For gives remote clients.
        "TRUSTED_PROXIES": "127.0.0.0/8",
    }
    apis = [LiveServer(root / f"api{i}", role="api", env=shared) for i in range(2)]
    for api in apis:
        api.launch()
    for api in apis:
        api.wait_healthy()
    gateways = [
        LiveServer(root / f"gw{i}", role="gateway", env={**shared, "BACKEND_URL": api.url})
        for i, api in enumerate(apis)
    ]
    for gateway in gateways:
        gateway.launch()
    servers = {"api_a": apis[0], "api_b": apis[1], "gw_x": gateways[0], "gw_y": gateways[1]}
    try:
        for gateway in gateways:
            gateway.wait_healthy()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
async def clients(cluster: dict[str, LiveServer]) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=cluster["api_a"].url, timeout=10) as a,
        httpx.AsyncClient(base_url=cluster["api_b"].url, timeout=10) as b,
    ):
        yield {"a": a, "b": b}


async def test_changes_through_either_api_reach_members_on_either_gateway(
    cluster: dict[str, LiveServer], clients: dict[str, httpx.AsyncClient]
) -> None:
    fa, fb = Factory(clients["a"]), Factory(clients["b"])
    owner = await fa.user()
    mate = await fa.user()
    team = await fa.team(owner)
    await fa.member(team["id"], owner, mate)
    on_x = await SocketProbe(cluster["gw_x"].url).connect({"token": owner.access_token})
    on_y = await SocketProbe(cluster["gw_y"].url).connect({"token": mate.access_token})
    try:
        for probe in (on_x, on_y):
            hello = await probe.next("authenticated", timeout=10)
            assert [t["id"] for t in hello["teams"]] == [team["id"]]
        made = []
        for i in range(6):
            factory = fa if i % 2 else fb
            made.append(await factory.task(team["id"], owner if i % 2 else mate, title=f"t{i}"))
        for probe in (on_x, on_y):
            got = [await probe.next("task_created", timeout=10) for _ in made]
            assert [e["task"]["id"] for e in got] == [t["id"] for t in made]
            ids = [e["eventId"] for e in got]
            assert ids == sorted(ids)
    finally:
        await on_x.close()
        await on_y.close()


async def test_logout_all_on_one_api_disconnects_sockets_on_every_gateway(
    cluster: dict[str, LiveServer], clients: dict[str, httpx.AsyncClient]
) -> None:
    user = await Factory(clients["a"]).user()
    probes = [
        await SocketProbe(cluster[name].url).connect({"token": user.access_token})
        for name in ("gw_x", "gw_y")
    ]
    try:
        for probe in probes:
            await probe.next("authenticated", timeout=10)
        response = await clients["b"].post("/api/auth/logout-all", headers=user.headers)
        assert response.status_code == 204
        for probe in probes:
            error = await probe.next("authentication_error", timeout=3)
            assert error["code"] == "TOKEN_REVOKED" and error["action"] == "LOGIN"
            await probe.gone(timeout=3)
    finally:
        for probe in probes:
            await probe.close()


async def test_gateways_share_one_connection_bucket_through_redis(
    cluster: dict[str, LiveServer], clients: dict[str, httpx.AsyncClient]
) -> None:
    """A remote client (behind the trusted local proxy) gets 10 attempts in all, not 10 each."""
    user = await Factory(clients["a"]).user()
    forwarded = {"X-Forwarded-For": "203.0.113.77"}
    probes = [SocketProbe(cluster["gw_x" if i % 2 else "gw_y"].url) for i in range(11)]

    async def attempt(probe: SocketProbe) -> str:
        await probe.connect({"token": user.access_token}, headers=forwarded)
        name, data = await probe.first("authenticated", "authentication_error", timeout=10)
        return name if name == "authenticated" else str(data["code"])

    try:
        outcomes = await asyncio.gather(*(attempt(p) for p in probes))
        assert sorted(outcomes) == ["RATE_LIMITED"] + ["authenticated"] * 10, outcomes
    finally:
        await asyncio.gather(*(probe.close() for probe in probes))
