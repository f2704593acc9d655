"""A reconnect storm in split mode: `huddle gateway` asks `huddle api` in batches.

Real processes: many sockets authenticating at once cost the API a few
`POST /api/internal/bootstrap` requests (counted by the API's own metrics), not
three REST requests each, and every socket still gets its own data; a token
revoked before the gateway ever saw the user is still refused; with the API
gone, sockets are admitted degraded from what the gateway cached.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import Factory, TestUser
from tests.gateway.live import LiveServer, SocketProbe, mint_token

SOCKETS = 30


def requests_to(metrics: str, route: str) -> int:
    """Requests the API counted on `route`, every method and status."""
    pattern = rf'huddle_http_requests_total\{{[^}}]*route="{re.escape(route)}"[^}}]*\}} (\S+)'
    return int(sum(float(v) for v in re.findall(pattern, metrics)))


async def api_counts(client: httpx.AsyncClient) -> dict[str, int]:
    text = (await client.get("/metrics")).text
    return {
        route: requests_to(text, route)
        for route in (
            "/api/internal/bootstrap",
            "/api/users/me",
            "/api/users/{userId}/teams",
            "/api/users/{userId}/tasks",
        )
    }


async def expected_view(client: httpx.AsyncClient, user: TestUser) -> dict[str, Any]:
    me = (await client.get("/api/users/me", headers=user.headers)).json()
    teams = (await client.get(f"/api/users/{user.id}/teams?limit=100", headers=user.headers)).json()
    tasks = (await client.get(f"/api/users/{user.id}/tasks?limit=100", headers=user.headers)).json()
    return {"user": me, "teams": teams["items"], "tasks": tasks["items"]}


@pytest.mark.slow
async def test_a_storm_of_handshakes_costs_the_api_a_few_batched_requests(
    tmp_path: Path,
) -> None:
    api = LiveServer(tmp_path / "api", role="api", env={"RATE_LIMIT_ENABLED": "false"}).start()
    gateway = LiveServer(
        tmp_path / "gateway",
        role="gateway",
        env={"BACKEND_URL": api.url, "BACKEND_TIMEOUT": "2", "RATE_LIMIT_ENABLED": "false"},
    ).start()
    probes: list[SocketProbe] = []
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            factory = Factory(client)
            users = list(await asyncio.gather(*(factory.user() for _ in range(SOCKETS))))
            teams = [await factory.team(users[k]) for k in range(3)]
            for i, user in enumerate(users[3:], start=3):
                team = teams[i % 3]
                owner = users[teams.index(team)]
                await factory.member(team["id"], owner, user)
                if i % 2:
                    await factory.task(team["id"], owner, assigneeId=user.id)
            expected = {u.id: await expected_view(client, u) for u in users}
            revoked = users[-1]
            old_token = mint_token(revoked.id, issued_at=time.time() - 5)
            assert (
                await client.post("/api/auth/logout-all", headers=revoked.headers)
            ).status_code == 204
            before = await api_counts(client)

            async def connect(token: str) -> tuple[str, Any]:
                probe = SocketProbe(gateway.url)
                probes.append(probe)
                await probe.connect({"token": token})
                return await probe.first("authenticated", "authentication_error", timeout=15)

            answers = await asyncio.gather(
                *(connect(mint_token(u.id)) for u in users[:-1]), connect(old_token)
            )
            after = await api_counts(client)

        for user, (name, body) in zip(users[:-1], answers[:-1], strict=True):
            assert name == "authenticated", body
            assert body["degraded"] is False
            view = {k: body[k] for k in ("user", "teams", "tasks")}
            assert view == expected[user.id], user.id
        # Revoked before this gateway heard of it: the API refuses the claims.
        assert answers[-1][0] == "authentication_error"
        assert answers[-1][1]["code"] == "TOKEN_REVOKED"

        batches = after["/api/internal/bootstrap"] - before["/api/internal/bootstrap"]
        assert 1 <= batches <= SOCKETS // 4, batches
        for route in ("/api/users/me", "/api/users/{userId}/teams", "/api/users/{userId}/tasks"):
            assert after[route] == before[route], route

        # The API goes away: a returning socket is admitted from the gateway's cache.
        api.stop()
        again = SocketProbe(gateway.url)
        probes.append(again)
        await again.connect({"token": mint_token(users[4].id)})
        body = await again.next("authenticated", timeout=10)
        assert body["degraded"] is True
        assert (body["teams"], body["tasks"]) == (
            expected[users[4].id]["teams"],
            expected[users[4].id]["tasks"],
        )
    finally:
        await asyncio.gather(*(p.close() for p in probes), return_exceptions=True)
        gateway.stop()
        api.stop()
    assert "Traceback" not in gateway.log_text(tail=None)
    assert gateway.settings().service_credential() not in gateway.log_text(tail=None)
