"""HttpSource against a real `huddle api` process, and against dead, hung and failing ones."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from huddle.errors import (
    BackendUnavailable,
    RefreshTokenInvalid,
    RefreshTokenReused,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
)
from huddle.events import outbox
from huddle.events.types import StaleData
from huddle.gateway.sources.base import UserData
from huddle.gateway.sources.breaker import BreakerState
from huddle.gateway.sources.http import HttpSource
from huddle.gateway.sources.inprocess import InProcessSource
from huddle.runtime import Runtime
from huddle.security.tokens import Claims
from tests.factories import Factory, TestUser
from tests.gateway.backend_api import (
    SECRET,
    ApiProcess,
    FailingServer,
    SilentServer,
    TcpRelay,
    free_port,
    settings_for,
)

TIMEOUT = 1.0


def failures(reason: str) -> float:
    value = REGISTRY.get_sample_value("huddle_gateway_backend_failures_total", {"reason": reason})
    return value or 0.0


def breaker_gauge() -> float | None:
    return REGISTRY.get_sample_value("huddle_gateway_circuit_breaker_state")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    process = ApiProcess(tmp_path_factory.mktemp("api"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def client(api: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as c:
        yield c


@pytest.fixture
def factory(client: httpx.AsyncClient) -> Factory:
    return Factory(client)


@pytest.fixture
async def relay(api: ApiProcess) -> AsyncIterator[TcpRelay]:
    relay = TcpRelay(api.port)
    await relay.start()
    yield relay
    await relay.stop()


def make_source(tmp_path: Path, url: str, **options: Any) -> HttpSource:
    settings = settings_for(
        tmp_path,
        backend_url=url,
        backend_timeout=options.pop("timeout", TIMEOUT),
        redis_url=options.pop("redis_url", None),
        redis_prefix=options.pop("redis_prefix", "huddle"),
    )
    options.setdefault("reset_after", 0.3)
    options.setdefault("probe_interval", 0.05)
    return HttpSource(settings, **options)


@pytest.fixture
async def source(tmp_path: Path, relay: TcpRelay) -> AsyncIterator[HttpSource]:
    src = make_source(tmp_path, relay.url, page_size=2)
    await src.start()
    yield src
    await src.stop()


async def user_with_data(factory: Factory) -> tuple[TestUser, list[int], list[int]]:
    """A user in three teams (one as a plain member) with two tasks assigned of three."""
    user, other = await factory.user(), await factory.user()
    mine = [(await factory.team(user))["id"] for _ in range(2)]
    theirs = (await factory.team(other))["id"]
    await factory.member(theirs, other, user, role="admin")
    tasks = [
        (await factory.task(mine[0], user, assigneeId=user.id))["id"],
        (await factory.task(theirs, other, assigneeId=user.id))["id"],
    ]
    await factory.task(theirs, other, assigneeId=other.id)
    return user, [*mine, theirs], tasks


def claims(user_id: int) -> Claims:
    """The claims the gateway's edge hands on with a token (only the user id matters here)."""
    return Claims(user_id, time.time(), time.time() + 900, "jti")


async def test_fetch_follows_every_page_of_teams_and_tasks(
    source: HttpSource, factory: Factory, client: httpx.AsyncClient
) -> None:
    """Pages of 2: three teams and two tasks need more than one page each."""
    user, team_ids, task_ids = await user_with_data(factory)
    data = await source.fetch(claims(user.id), user.access_token)
    assert data.degraded is False
    assert data.user == (await client.get("/api/users/me", headers=user.headers)).json()
    assert [t["id"] for t in data.teams] == team_ids
    assert [t["role"] for t in data.teams] == ["owner", "owner", "admin"]
    assert [t["id"] for t in data.tasks] == task_ids


async def test_fetch_raises_the_backends_answer_about_the_token(
    tmp_path: Path, relay: TcpRelay, factory: Factory, client: httpx.AsyncClient
) -> None:
    """The three-request path (an API without the batched route): the token is forwarded."""
    source = make_source(tmp_path, relay.url, batch=False)
    user = await factory.user()
    expired = jwt.encode(
        {"sub": str(user.id), "type": "access", "iat": time.time() - 999, "exp": time.time() - 99},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(TokenExpired):
        await source.fetch(claims(user.id), expired)
    with pytest.raises(TokenInvalid):
        await source.fetch(claims(user.id), "not-a-token")
    other = await factory.user()
    with pytest.raises(TokenInvalid):  # a valid token of someone else
        await source.fetch(claims(user.id), other.access_token)
    await client.post("/api/auth/logout-all", headers=user.headers)
    with pytest.raises(TokenRevoked):
        await source.fetch(claims(user.id), user.access_token)
    # Answers about tokens are not backend failures.
    assert source.breaker.state is BreakerState.CLOSED and source.healthy
    await source.stop()


def claims_of(token: str) -> Claims:
    """The claims the gateway verifies a token into."""
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    return Claims(
        int(payload["sub"]), payload["iat"], payload["exp"], payload["jti"], payload["fam"]
    )


async def test_batched_fetches_get_each_sockets_own_answer(
    source: HttpSource, factory: Factory, client: httpx.AsyncClient
) -> None:
    """Concurrent fetches share bootstrap requests; each gets its own data or refusal."""
    users = [await factory.user() for _ in range(4)]
    team = await factory.team(users[0])
    await factory.member(team["id"], users[0], users[1])
    await factory.task(team["id"], users[0], assigneeId=users[1].id)
    revoked, family_gone = await factory.user(), await factory.user()
    revoked_claims, family_claims = (
        claims_of(revoked.access_token),
        claims_of(family_gone.access_token),
    )
    await client.post("/api/auth/logout-all", headers=revoked.headers)
    await client.post("/api/auth/logout", json={"refresh_token": family_gone.refresh_token})
    batches = REGISTRY.get_sample_value("huddle_gateway_backend_batch_size_count") or 0.0
    results = await asyncio.gather(
        *(source.fetch(claims_of(u.access_token), u.access_token) for u in users),
        source.fetch(revoked_claims, revoked.access_token),
        source.fetch(family_claims, family_gone.access_token),
        source.fetch(claims(2**31 - 1), "unused"),  # no such user
        return_exceptions=True,
    )
    assert (
        REGISTRY.get_sample_value("huddle_gateway_backend_batch_size_count") or 0
    ) - batches == 1
    for user, data in zip(users, results[:4], strict=True):
        assert isinstance(data, UserData) and not data.degraded
        assert data.user == (await client.get("/api/users/me", headers=user.headers)).json()
    assert isinstance(results[0], UserData) and [t["id"] for t in results[0].teams] == [team["id"]]
    assert isinstance(results[1], UserData) and [t["assigneeId"] for t in results[1].tasks] == [
        users[1].id
    ]
    assert isinstance(results[2], UserData) and results[2].teams == results[2].tasks == []
    assert isinstance(results[4], TokenRevoked) and isinstance(results[5], TokenRevoked)
    assert isinstance(results[6], TokenInvalid)
    assert source.breaker.state is BreakerState.CLOSED and source.healthy


async def test_rotate_redeems_once_and_reports_reuse(source: HttpSource, factory: Factory) -> None:
    user = await factory.user()
    pair = await source.rotate(user.refresh_token)
    assert pair.access_token and pair.refresh_token != user.refresh_token
    assert pair.expires_in > 0
    data = await source.fetch(claims(user.id), pair.access_token)
    assert data.user["id"] == user.id and not data.degraded
    with pytest.raises(RefreshTokenReused):
        await source.rotate(user.refresh_token)
    with pytest.raises(RefreshTokenInvalid):
        await source.rotate("garbage")


async def test_http_and_in_process_sources_answer_identically(
    source: HttpSource, factory: Factory, client: httpx.AsyncClient, api: ApiProcess
) -> None:
    """The same database read both ways: fetch and replay agree field for field."""
    runtime = await Runtime.start(settings_for(api.data_dir))
    in_process = InProcessSource(runtime)
    try:
        async with runtime.db.read() as session:
            start = await outbox.last_event_id(session)
        user, team_ids, _ = await user_with_data(factory)
        outsider = await factory.user()
        own = (await factory.team(outsider))["id"]
        await factory.member(team_ids[0], user, outsider)
        await client.delete(f"/api/teams/{team_ids[0]}/members/{outsider.id}", headers=user.headers)

        over_http = await source.fetch(claims(user.id), user.access_token)
        direct = await in_process.fetch(claims(user.id), user.access_token)
        assert over_http == direct
        # Both name the log's newest event, read before the data (`UserData.head`).
        async with runtime.db.read() as session:
            assert over_http.head == await outbox.last_event_id(session) > (start or 0)

        http_replay = await source.replay(user.id, user.access_token, start)
        direct_replay = await in_process.replay(user.id, user.access_token, start)
        assert http_replay == direct_replay
        assert [e.type for e in http_replay.events].count("member_removed") == 1
        # The outsider sees its own team and its short stay in the user's team, nothing else.
        seen = await source.replay(outsider.id, outsider.access_token, start)
        assert [(e.type, e.team_id, e.subject_user_id) for e in seen.events] == [
            ("member_added", own, outsider.id),
            ("member_added", team_ids[0], outsider.id),
            ("member_removed", team_ids[0], outsider.id),
        ]
    finally:
        await in_process.stop()
        await runtime.stop()


async def test_backend_down_degrades_from_cache_or_empty_within_the_timeout(
    source: HttpSource, factory: Factory, relay: TcpRelay
) -> None:
    user, _, _ = await user_with_data(factory)
    stranger = await factory.user()
    fresh = await source.fetch(claims(user.id), user.access_token)
    await relay.stop()
    before = failures("connect")

    started = time.monotonic()
    cached = await source.fetch(claims(user.id), user.access_token)
    empty = await source.fetch(claims(stranger.id), stranger.access_token)
    assert time.monotonic() - started < 2 * TIMEOUT

    assert cached.degraded and (cached.user, cached.teams, cached.tasks) == (
        fresh.user,
        fresh.teams,
        fresh.tasks,
    )
    assert empty.degraded and empty.user == {"id": stranger.id}
    assert empty.teams == [] and empty.tasks == []
    assert failures("connect") == before + 2
    assert not source.healthy
    with pytest.raises(BackendUnavailable):
        await source.rotate(user.refresh_token)
    with pytest.raises(BackendUnavailable):
        await source.replay(user.id, user.access_token, 0)


async def test_invalidate_drops_the_cached_data(
    source: HttpSource, factory: Factory, relay: TcpRelay
) -> None:
    user, _, _ = await user_with_data(factory)
    await source.fetch(claims(user.id), user.access_token)
    source.invalidate(StaleData(users=frozenset({user.id})))
    await relay.stop()
    data = await source.fetch(claims(user.id), user.access_token)
    assert data.degraded and data.teams == [] and data.user == {"id": user.id}


async def test_cache_entries_expire_after_the_ttl(
    tmp_path: Path, factory: Factory, relay: TcpRelay
) -> None:
    source = make_source(tmp_path, relay.url, cache_ttl=0.2)
    try:
        user, _, _ = await user_with_data(factory)
        await source.fetch(claims(user.id), user.access_token)
        await relay.stop()
        assert (await source.fetch(claims(user.id), user.access_token)).teams != []
        await asyncio.sleep(0.25)
        assert (await source.fetch(claims(user.id), user.access_token)).teams == []
    finally:
        await source.stop()


async def test_breaker_opens_after_five_failures_then_half_opens_for_one_trial(
    tmp_path: Path,
) -> None:
    source = make_source(tmp_path, f"http://127.0.0.1:{free_port()}")
    try:
        for _ in range(5):
            assert (await source.fetch(claims(1), "token")).degraded
        assert source.breaker.state is BreakerState.OPEN
        assert breaker_gauge() == BreakerState.OPEN
        refused = failures("breaker_open")
        started = time.monotonic()
        assert (await source.fetch(claims(1), "token")).degraded
        assert time.monotonic() - started < 0.05  # refused without trying
        assert failures("breaker_open") == refused + 1

        await asyncio.sleep(0.3)
        assert source.breaker.state is BreakerState.HALF_OPEN
        connect = failures("connect")
        assert (await source.fetch(claims(1), "token")).degraded  # the one trial, still down
        assert failures("connect") == connect + 1
        assert source.breaker.state is BreakerState.OPEN
    finally:
        await source.stop()


async def test_recovery_is_detected_by_the_probe_and_runs_the_callbacks(
    source: HttpSource, factory: Factory, relay: TcpRelay
) -> None:
    user, team_ids, _ = await user_with_data(factory)
    recovered = asyncio.Event()

    async def on_recovered() -> None:
        recovered.set()

    source.on_recovered(on_recovered)
    await relay.stop()
    for _ in range(5):
        await source.fetch(claims(user.id), user.access_token)
    assert source.breaker.state is BreakerState.OPEN

    await relay.start()  # nobody fetches: only the background probe can notice
    await asyncio.wait_for(recovered.wait(), timeout=3)
    assert source.healthy and source.breaker.state is BreakerState.CLOSED
    assert breaker_gauge() == BreakerState.CLOSED
    data = await source.fetch(claims(user.id), user.access_token)
    assert not data.degraded and [t["id"] for t in data.teams] == team_ids


async def test_a_long_outage_with_nobody_connecting_is_noticed_as_soon_as_it_ends(
    tmp_path: Path, factory: Factory, relay: TcpRelay
) -> None:
    """Probes alone never open the breaker: a backend down for many probe intervals
    is seen back within one interval, not after the breaker's reset time."""
    source = make_source(tmp_path, relay.url, reset_after=30.0)
    await source.start()
    try:
        user, team_ids, _ = await user_with_data(factory)
        recovered = asyncio.Event()

        async def on_recovered() -> None:
            recovered.set()

        source.on_recovered(on_recovered)
        await relay.stop()
        assert (await source.fetch(claims(user.id), user.access_token)).degraded
        probes = failures("connect")
        await asyncio.sleep(0.6)  # a dozen probe intervals, every probe failing
        assert failures("connect") >= probes + 5
        assert source.breaker.state is BreakerState.CLOSED

        await relay.start()
        await asyncio.wait_for(recovered.wait(), timeout=1)
        data = await source.fetch(claims(user.id), user.access_token)
        assert not data.degraded and [t["id"] for t in data.teams] == team_ids
    finally:
        await source.stop()


async def test_a_hung_backend_times_out_and_degrades(tmp_path: Path) -> None:
    async with SilentServer() as hung:
        source = make_source(tmp_path, hung.url, timeout=0.3)
        try:
            before = failures("timeout")
            started = time.monotonic()
            data = await source.fetch(claims(7), "token")
            assert time.monotonic() - started < 0.6
            assert data.degraded and data.user == {"id": 7}
            assert failures("timeout") == before + 1
        finally:
            await source.stop()


async def test_a_failing_backend_5xx_degrades_and_counts(tmp_path: Path) -> None:
    async with FailingServer() as failing:
        source = make_source(tmp_path, failing.url)
        try:
            before = failures("http_5xx")
            assert (await source.fetch(claims(7), "token")).degraded
            assert failures("http_5xx") == before + 1
            with pytest.raises(BackendUnavailable):
                await source.rotate("refresh")
        finally:
            await source.stop()


@pytest.mark.redis
async def test_redis_cache_is_shared_and_invalidated(
    tmp_path: Path, factory: Factory, relay: TcpRelay, redis_url: str, redis_prefix: str
) -> None:
    """One gateway fetches; another, whose backend is down, answers from Redis."""
    live = make_source(tmp_path, relay.url, redis_url=redis_url, redis_prefix=redis_prefix)
    dead = make_source(
        tmp_path, f"http://127.0.0.1:{free_port()}", redis_url=redis_url, redis_prefix=redis_prefix
    )
    client = aioredis.Redis.from_url(redis_url)
    try:
        user, team_ids, _ = await user_with_data(factory)
        await live.fetch(claims(user.id), user.access_token)
        key = live.cache.key(user.id)
        stored = json.loads(await client.get(key))
        assert [t["id"] for t in stored["teams"]] == team_ids
        assert 0 < await client.pttl(key) <= 60_000

        elsewhere = await dead.fetch(claims(user.id), user.access_token)
        assert elsewhere.degraded and [t["id"] for t in elsewhere.teams] == team_ids

        live.invalidate(StaleData(users=frozenset({user.id})))
        for _ in range(50):
            if not await client.exists(key):
                break
            await asyncio.sleep(0.01)
        assert not await client.exists(key)
        assert (await dead.fetch(claims(user.id), user.access_token)).teams == []
    finally:
        await client.aclose()
        await live.stop()
        await dead.stop()


async def test_redis_down_falls_back_to_the_memory_cache(
    tmp_path: Path, factory: Factory, relay: TcpRelay
) -> None:
    source = make_source(tmp_path, relay.url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        user, team_ids, _ = await user_with_data(factory)
        assert not (await source.fetch(claims(user.id), user.access_token)).degraded
        await relay.stop()
        data = await source.fetch(claims(user.id), user.access_token)
        assert data.degraded and [t["id"] for t in data.teams] == team_ids
    finally:
        await source.stop()
