"""SPEC §5 on the socket: connection buckets per client IP, expired-token bucket, event rate.

One server with the default limits. Each test connects from its own loopback
address (127.0.0.x), so each has buckets of its own: the client IP is the TCP
peer, never a header from an untrusted peer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.factories import Factory, TestUser
from tests.gateway.live import LiveServer, SocketProbe, mint_token

TRUSTED_PROXY = "127.0.0.50"
PRESENCE = {"teamId": 1_000_000}  # answered NOT_FOUND at once: a cheap event to send many of


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"TRUSTED_PROXIES": f"{TRUSTED_PROXY}/32", "LOG_LEVEL": "debug", "JWT_LEEWAY": "0"}
    with LiveServer(tmp_path_factory.mktemp("strict"), env=env) as server:
        yield server


@pytest.fixture
async def user(strict: LiveServer) -> TestUser:
    async with httpx.AsyncClient(base_url=strict.url) as client:
        return await Factory(client).user()


class Crowd:
    """Many short connection attempts from one address; closes them all at the end."""

    def __init__(self, url: str, source_ip: str) -> None:
        self.url = url
        self.source_ip = source_ip
        self.probes: list[SocketProbe] = []

    async def attempt(
        self, auth: dict[str, object], headers: dict[str, str] | None = None
    ) -> tuple[str, dict[str, object]]:
        """Connect; the first of `authenticated`/`authentication_error` and its payload."""
        probe = SocketProbe(self.url, source_ip=self.source_ip)
        self.probes.append(probe)
        await probe.connect(auth, headers=headers)
        name, data = await probe.first("authenticated", "authentication_error")
        return name, data

    async def close(self) -> None:
        await asyncio.gather(*(probe.close() for probe in self.probes))


@pytest.fixture
async def crowd(strict: LiveServer) -> AsyncIterator[Crowd]:
    crowds: list[Crowd] = []

    def make(source_ip: str) -> Crowd:
        crowds.append(Crowd(strict.url, source_ip))
        return crowds[-1]

    yield make  # type: ignore[misc]
    for c in crowds:
        await c.close()


async def test_localhost_gets_a_burst_of_20_then_rate_limited_with_retry_after(
    crowd: Crowd, user: TestUser
) -> None:
    attempts = crowd("127.0.0.21")  # type: ignore[operator]
    spoof = {"X-Forwarded-For": "198.51.100.1"}  # untrusted peer: ignored
    started = time.monotonic()
    outcomes: list[str] = []
    while len(outcomes) < 40:
        name, error = await attempts.attempt({"token": user.access_token}, spoof)
        outcomes.append(name)
        if name != "authenticated":
            break
        await attempts.probes[-1].close()  # (MAX_CONNECTIONS_PER_USER is 20 too)
    # 20 at once; on a slow machine one more per 500 ms that the attempts took.
    refilled = int((time.monotonic() - started) / 0.5)
    assert 20 <= outcomes.count("authenticated") <= 20 + refilled, outcomes
    assert outcomes[-1] == "authentication_error"
    assert (error["code"], error["action"]) == ("RATE_LIMITED", "RETRY")
    retry_after = error["retryAfter"]
    assert isinstance(retry_after, int) and 0 < retry_after <= 500
    await attempts.probes[-1].gone()
    await attempts.close()

    await asyncio.sleep(retry_after / 1000 + 0.05)  # the bucket refills
    name, answer = await attempts.attempt({"token": user.access_token})
    assert name == "authenticated", answer


async def test_expired_token_storms_have_their_own_bucket(crowd: Crowd, user: TestUser) -> None:
    attempts = crowd("127.0.0.22")  # type: ignore[operator]
    expired = mint_token(user.id, ttl=-30)
    answers = [(await attempts.attempt({"token": expired}))[1]["code"] for _ in range(55)]
    assert answers[:50] == ["TOKEN_EXPIRED"] * 50
    assert "RATE_LIMITED" in answers[50:]
    await attempts.close()
    # The storm left the normal bucket whole: the full localhost burst is there.
    for n in range(20):
        name, _ = await attempts.attempt({"token": user.access_token})
        assert name == "authenticated", n


async def test_a_forwarded_client_behind_a_trusted_proxy_gets_the_production_limit(
    crowd: Crowd, user: TestUser
) -> None:
    attempts = crowd(TRUSTED_PROXY)  # type: ignore[operator]
    forwarded = {"X-Forwarded-For": "198.51.100.77"}
    for n in range(10):
        name, _ = await attempts.attempt({"token": user.access_token}, forwarded)
        assert name == "authenticated", n
    name, error = await attempts.attempt({"token": user.access_token}, forwarded)
    assert error["code"] == "RATE_LIMITED"
    assert 0 < int(str(error["retryAfter"])) <= 2000
    # Another client behind the same proxy has its own bucket.
    other = {"X-Forwarded-For": "198.51.100.78"}
    name, _ = await attempts.attempt({"token": user.access_token}, other)
    assert name == "authenticated"


async def test_a_forwarded_loopback_address_never_gets_localhost_limits(
    crowd: Crowd, user: TestUser
) -> None:
    """With a trusted proxy, `X-Forwarded-For: 127.0.0.2` passed 14 of 14 rapid connects."""
    attempts = crowd(TRUSTED_PROXY)  # type: ignore[operator]
    for forwarded_ip in ("127.0.0.2", "::1"):
        forwarded = {"X-Forwarded-For": forwarded_ip}
        outcomes = [
            (await attempts.attempt({"token": user.access_token}, forwarded))[0] for _ in range(11)
        ]
        assert outcomes == ["authenticated"] * 10 + ["authentication_error"], forwarded_ip


@pytest.fixture(scope="module")
def slow_events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A low event budget (bursts of 20, then 2 a second), so that what passes and what is
    refused does not depend on how fast a loaded machine handles the events."""
    env = {"SOCKET_EVENT_RATE": "2", "SOCKET_EVENT_BURST": "20"}
    with LiveServer(tmp_path_factory.mktemp("events"), env=env) as server:
        yield server


async def test_a_socket_sending_too_fast_is_answered_then_disconnected_if_it_keeps_on(
    slow_events: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=slow_events.url) as client:
        user = await Factory(client).user()
    probe = SocketProbe(slow_events.url)
    try:
        await probe.connect({"token": user.access_token})
        await probe.next("authenticated")
        started = time.monotonic()
        acks = await asyncio.gather(*(probe.call("team_presence", PRESENCE) for _ in range(35)))
        elapsed = time.monotonic() - started
        limited = [a for a in acks if a["error"]["code"] != "NOT_FOUND"]
        # The burst of 20 passes, then 2 a second; fewer than 20 refusals: still connected.
        assert 35 - len(limited) <= 20 + 2 * elapsed + 1, (len(limited), elapsed)
        assert limited
        assert all(a["error"]["code"] == "RATE_LIMITED" for a in limited)
        assert all(a["error"]["retryAfter"] > 0 for a in limited)
        assert probe.client.connected
        # ... and keeps flooding after being told: SOCKET_EVENT_BURST refusals in a row.
        await asyncio.gather(*(probe.emit("team_presence", PRESENCE) for _ in range(100)))
        error = await probe.next("authentication_error")
        assert (error["code"], error["action"]) == ("RATE_LIMITED", "RETRY")
        await probe.gone()
    finally:
        await probe.close()


async def test_the_server_log_never_holds_a_token(strict: LiveServer, user: TestUser) -> None:
    probe = SocketProbe(strict.url, source_ip="127.0.0.24")
    try:
        await probe.connect({"token": user.access_token})
        await probe.next("authenticated")
        await probe.call("refresh_token", {"refreshToken": user.refresh_token})
        refreshed = await probe.next("token_refreshed")
    finally:
        await probe.close()
    log = strict.log_text(tail=None)
    assert "socket_authenticated" in log  # debug logging was on
    for secret in (user.access_token, user.refresh_token, refreshed["refreshToken"]):
        assert secret not in log
