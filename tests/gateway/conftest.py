"""Fixtures for gateway tests: live `huddle serve` processes and clients for them.

`live` is one server for the whole session, tuned so tests are fast and do
not trip each other: short AUTH_TIMEOUT/AUTH_GRACE/TOKEN_EXPIRY_WARNING, no JWT
leeway, and connection/event limits high enough that only the rate-limit
tests (which start their own server with the defaults) meet them. Tests share
it, so each makes its own users and teams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import Factory
from tests.gateway.live import LiveServer, SocketProbe

FAST_TIMINGS = {
    "AUTH_TIMEOUT": "1",
    "AUTH_GRACE": "1.5",
    "TOKEN_EXPIRY_WARNING": "1",
    "JWT_LEEWAY": "0",
    # A spent refresh token presented again is reuse at once (no two-tab grace), as
    # the refresh tests expect; the grace itself is tested in tests/api/test_auth.py.
    "REFRESH_REUSE_GRACE": "0",
}
NO_PRACTICAL_LIMITS = {
    "MAX_CONNECTIONS_LOCALHOST": "100000",
    "MAX_EXPIRED_ATTEMPTS_LOCALHOST": "100000",
    "SOCKET_EVENT_RATE": "10000",
    "SOCKET_EVENT_BURST": "10000",
    "MAX_CONNECTIONS_PER_USER": "4",
}


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The shared `huddle serve` of the gateway tests."""
    server = LiveServer(
        tmp_path_factory.mktemp("live"), env={**FAST_TIMINGS, **NO_PRACTICAL_LIMITS}
    )
    with server:
        yield server
    log = server.log_text(tail=None)
    for sign in ("Traceback", "socket_handler_failed", "gateway_task_failed"):
        assert sign not in log, f"the live server logged {sign!r}:\n{log[-3000:]}"


@pytest.fixture
async def api(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the live server's REST API."""
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        yield client


@pytest.fixture
def factory(api: httpx.AsyncClient) -> Factory:
    return Factory(api)


ProbeMaker = Callable[..., Awaitable[SocketProbe]]


@pytest.fixture
async def connect(live: LiveServer) -> AsyncIterator[ProbeMaker]:
    """`await connect(auth=..., url=...)`: a connected `SocketProbe`, closed after the test."""
    probes: list[SocketProbe] = []

    async def make(
        auth: Any = None, *, url: str | None = None, source_ip: str | None = None, **options: Any
    ) -> SocketProbe:
        probe = SocketProbe(url or live.url, source_ip=source_ip)
        probes.append(probe)
        return await probe.connect(auth, **options)

    yield make
    for probe in probes:
        await probe.close()


def data_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    return path
