"""Token buckets and the limits of SPEC §5, driven by an injectable clock (no sleeps)."""

from __future__ import annotations

import ipaddress
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from huddle.config import Settings
from huddle.errors import RateLimited
from huddle.security.buckets import MemoryBucketStore
from huddle.security.client_ip import client_ip, is_loopback
from huddle.security.ratelimit import (
    ConnectionLimiter,
    LoginLimiter,
    SocketEventLimiter,
    create_bucket_store,
    rate_key,
)

# SPEC §5, pinned so an environment variable on the test machine cannot move them.
SPEC_DEFAULTS: dict[str, Any] = {
    "max_connections_per_ip": 10,
    "max_connections_localhost": 20,
    "connection_cooldown": 2000,
    "connection_cooldown_localhost": 500,
    "max_expired_attempts": 10,
    "max_expired_attempts_localhost": 50,
    "expired_token_cooldown": 1000,
    "connection_window": 60_000,
    "max_connections_per_user": 20,
    "socket_event_rate": 20,
    "socket_event_burst": 50,
    "login_rate": 10,
    "login_window": 900,
    "rate_limit_enabled": True,
}


def settings(**values: Any) -> Settings:
    merged = {
        "app_env": "test",
        "jwt_secret": "unit-test-secret-0123456789-abcdefghij",
        **SPEC_DEFAULTS,
        **values,
    }
    return Settings(_env_file=None, **merged)


class Clock:
    """Milliseconds that move only when a test says so."""

    def __init__(self, ms: int = 1_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


class Seconds:
    """The same, in float seconds, for the per-socket limiter."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refusals(limit: str, scope: str) -> float:
    value = REGISTRY.get_sample_value(
        "huddle_rate_limit_refusals_total", {"limit": limit, "scope": scope}
    )
    return value or 0.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryBucketStore:
    return MemoryBucketStore(window_ms=60_000, clock=clock)


async def burst(limiter: ConnectionLimiter, ip: str, *, expired: bool = False) -> int:
    """How many attempts in a row are allowed right now."""
    allowed = 0
    while (await limiter.check(ip, expired=expired, localhost=is_loopback(ip))).allowed:
        allowed += 1
        if allowed > 1000:
            raise AssertionError("the bucket never ran out")
    return allowed


def test_settings_defaults_are_those_of_the_spec() -> None:
    for name, value in SPEC_DEFAULTS.items():
        assert Settings.model_fields[name].default == value, name


# --- connection attempts ---------------------------------------------------------------


async def test_localhost_gets_a_burst_of_20_then_one_attempt_every_500_ms(
    store: MemoryBucketStore, clock: Clock
) -> None:
    limiter = ConnectionLimiter(store, settings())
    assert await burst(limiter, "127.0.0.1") == 20

    refused = await limiter.check("127.0.0.1", expired=False, localhost=True)
    assert (refused.allowed, refused.retry_after_ms) == (False, 500)
    clock.advance(499)
    assert (await limiter.check("127.0.0.1", expired=False, localhost=True)).retry_after_ms == 1
    clock.advance(1)
    assert (await limiter.check("127.0.0.1", expired=False, localhost=True)).allowed
    assert not (await limiter.check("127.0.0.1", expired=False, localhost=True)).allowed

    clock.advance(20 * 500)
    assert await burst(limiter, "127.0.0.1") == 20


async def test_each_loopback_source_address_has_its_own_bucket(store: MemoryBucketStore) -> None:
    limiter = ConnectionLimiter(store, settings())
    for last in (1, 2, 3):
        assert await burst(limiter, f"127.0.0.{last}") == 20
    assert await burst(limiter, "::1") == 20


async def test_remote_clients_get_10_attempts_then_one_every_2_seconds(
    store: MemoryBucketStore, clock: Clock
) -> None:
    limiter = ConnectionLimiter(store, settings())
    assert await burst(limiter, "198.51.100.7") == 10
    assert (
        await limiter.check("198.51.100.7", expired=False, localhost=False)
    ).retry_after_ms == 2000
    clock.advance(2000)
    assert await burst(limiter, "198.51.100.7") == 1


async def test_expired_token_storms_leave_the_normal_bucket_whole(
    store: MemoryBucketStore,
) -> None:
    limiter = ConnectionLimiter(store, settings())
    assert await burst(limiter, "127.0.0.1", expired=True) == 50
    assert await burst(limiter, "198.51.100.7", expired=True) == 10

    local = await limiter.check("127.0.0.1", expired=False, localhost=True)
    remote = await limiter.check("198.51.100.7", expired=False, localhost=False)
    assert (local.allowed, local.remaining) == (True, 19)
    assert (remote.allowed, remote.remaining) == (True, 9)


async def test_a_full_normal_bucket_does_not_block_an_expired_token_refresh(
    store: MemoryBucketStore,
) -> None:
    limiter = ConnectionLimiter(store, settings())
    assert await burst(limiter, "198.51.100.7") == 10
    assert (await limiter.check("198.51.100.7", expired=True, localhost=False)).allowed


async def test_the_expired_bucket_refills_one_attempt_every_second(
    store: MemoryBucketStore, clock: Clock
) -> None:
    limiter = ConnectionLimiter(store, settings())
    assert await burst(limiter, "198.51.100.7", expired=True) == 10
    refused = await limiter.check("198.51.100.7", expired=True, localhost=False)
    assert refused.retry_after_ms == 1000
    clock.advance(1000)
    assert await burst(limiter, "198.51.100.7", expired=True) == 1


async def test_production_limits_for_a_forwarded_client_behind_a_trusted_proxy(
    store: MemoryBucketStore,
) -> None:
    config = settings(app_env="production", trusted_proxies="127.0.0.1/32")
    limiter = ConnectionLimiter(store, config)
    via_local_proxy = {
        "type": "websocket",
        "client": ("127.0.0.1", 40000),
        "headers": [(b"x-forwarded-for", b"198.51.100.7")],
    }
    ip = client_ip(via_local_proxy, config.trusted_networks)
    assert ip == "198.51.100.7"
    assert await burst(limiter, ip) == 10
    assert (await limiter.check(ip, expired=False, localhost=False)).retry_after_ms == 2000
    # Another client behind the same proxy is a different bucket.
    assert await burst(limiter, "198.51.100.8") == 10


async def test_a_spoofed_forwarded_header_from_an_untrusted_peer_gets_no_localhost_limits(
    store: MemoryBucketStore,
) -> None:
    config = settings(app_env="production", trusted_proxies="10.0.0.0/8")
    limiter = ConnectionLimiter(store, config)
    spoofed = {
        "type": "websocket",
        "client": ("203.0.113.9", 40000),
        "headers": [(b"x-forwarded-for", b"127.0.0.1"), (b"host", b"localhost")],
    }
    ip = client_ip(spoofed, config.trusted_networks)
    assert ip == "203.0.113.9"
    assert await burst(limiter, ip) == 10


async def test_rate_limit_enabled_false_allows_every_attempt(store: MemoryBucketStore) -> None:
    limiter = ConnectionLimiter(store, settings(rate_limit_enabled=False))
    for _ in range(500):
        assert (await limiter.check("198.51.100.7", expired=False, localhost=False)).allowed
        assert (await limiter.check("198.51.100.7", expired=True, localhost=False)).allowed
    assert len(store) == 0


async def test_refusals_are_counted_by_limit_and_by_localhost_or_remote(
    store: MemoryBucketStore,
) -> None:
    limiter = ConnectionLimiter(store, settings())
    before = {
        key: refusals(*key) for key in [("connection", "localhost"), ("expired_token", "remote")]
    }
    await burst(limiter, "127.0.0.1")
    await burst(limiter, "198.51.100.7", expired=True)
    assert refusals("connection", "localhost") == before["connection", "localhost"] + 1
    assert refusals("expired_token", "remote") == before["expired_token", "remote"] + 1


async def test_an_ipv6_host_cannot_escape_its_limit_by_rotating_addresses_in_its_64(
    store: MemoryBucketStore,
) -> None:
    limiter = ConnectionLimiter(store, settings())
    assert rate_key("2001:db8:1:2::1") == rate_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    allowed = 0
    for host in range(1, 30):
        allowed += (
            await limiter.check(f"2001:db8:1:2::{host:x}", expired=False, localhost=False)
        ).allowed
    assert allowed == 10
    assert (await limiter.check("2001:db8:1:3::1", expired=False, localhost=False)).allowed


# --- the memory store ------------------------------------------------------------------


async def test_100000_ips_leave_a_bounded_store_after_the_window(
    store: MemoryBucketStore, clock: Clock
) -> None:
    limiter = ConnectionLimiter(store, settings())
    first = int(ipaddress.ip_address("11.0.0.0"))
    for offset in range(100_000):
        await limiter.check(
            str(ipaddress.ip_address(first + offset)), expired=offset % 2 == 0, localhost=False
        )
    assert len(store) == 100_000

    clock.advance(59_999)
    assert store.evict() == 0
    clock.advance(1)
    await limiter.check("198.51.100.7", expired=False, localhost=False)
    assert len(store) == 1


async def test_state_still_refilling_outlives_the_window(clock: Clock) -> None:
    """A bucket slower to refill than the window keeps its debt (the 15-minute login buckets)."""
    store = MemoryBucketStore(window_ms=60_000, clock=clock)
    for _ in range(10):
        assert (await store.take("slow", 10, 90_000)).allowed
    clock.advance(61_000)
    store.evict()
    assert not (await store.peek("slow", 10, 90_000)).allowed
    clock.advance(900_000 - 61_000)
    store.evict()
    assert len(store) == 0


async def test_the_store_never_holds_more_than_max_keys(clock: Clock) -> None:
    store = MemoryBucketStore(window_ms=60_000, clock=clock, max_keys=100)
    for index in range(1_000):
        await store.take(f"k{index}", 5, 1000)
    assert len(store) == 100
    # The most recent survive; the oldest went first. (A peek answers as a take would.)
    assert (await store.peek("k999", 5, 1000)).remaining == 3
    assert (await store.peek("k0", 5, 1000)).remaining == 4


async def test_peek_answers_like_take_but_consumes_nothing(store: MemoryBucketStore) -> None:
    for _ in range(5):
        peeked = await store.peek("k", 3, 1000)
        assert (peeked.allowed, peeked.remaining) == (True, 2)
    assert len(store) == 0
    for left in (2, 1, 0):
        assert (await store.take("k", 3, 1000)).remaining == left
    assert (await store.peek("k", 3, 1000)).retry_after_ms == 1000


async def test_a_refused_take_spends_nothing(store: MemoryBucketStore, clock: Clock) -> None:
    await store.take("k", 2, 1000, cost=2)
    for _ in range(10):
        assert not (await store.take("k", 2, 1000)).allowed
    clock.advance(1000)
    assert (await store.take("k", 2, 1000)).allowed


async def test_impossible_requests_are_errors(store: MemoryBucketStore) -> None:
    with pytest.raises(ValueError, match="cost"):
        await store.take("k", 2, 1000, cost=3)
    with pytest.raises(ValueError, match="capacity"):
        await store.take("k", 0, 1000)
    with pytest.raises(ValueError, match="refill_ms"):
        await store.peek("k", 1, 0)


@given(
    capacity=st.integers(1, 20),
    refill_ms=st.integers(1, 5000),
    steps=st.lists(st.tuples(st.integers(0, 8000), st.integers(1, 3)), max_size=60),
)
def test_the_store_is_exactly_a_token_bucket(
    capacity: int, refill_ms: int, steps: list[tuple[int, int]]
) -> None:
    """Against the textbook bucket: tokens refill continuously, capped at the capacity."""
    clock = Clock(0)
    store = MemoryBucketStore(window_ms=60_000, clock=clock)
    tokens, last = Fraction(capacity), 0
    for advance, wanted in steps:
        clock.advance(advance)
        cost = min(wanted, capacity)
        tokens = min(Fraction(capacity), tokens + Fraction(clock.ms - last, refill_ms))
        last = clock.ms
        decision = store.take_sync("k", capacity, refill_ms, cost=cost)
        assert decision.allowed == (tokens >= cost)
        if decision.allowed:
            tokens -= cost
            assert decision.retry_after_ms == 0
        else:
            assert decision.retry_after_ms == (cost - tokens) * refill_ms
        assert decision.remaining == int(tokens)


def test_memory_is_the_default_store() -> None:
    assert isinstance(create_bucket_store(settings()), MemoryBucketStore)


# --- failed logins ---------------------------------------------------------------------


async def test_ten_failed_logins_lock_the_ip_for_90_seconds_but_not_the_owner_elsewhere(
    store: MemoryBucketStore, clock: Clock
) -> None:
    limiter = LoginLimiter(store, settings())
    for _ in range(10):
        await limiter.check("198.51.100.7", "Ann@Example.com")
        await limiter.record_failure("198.51.100.7", "Ann@Example.com")

    # The guesser's address is out of attempts, for this account and any other.
    with pytest.raises(RateLimited) as caught:
        await limiter.check("198.51.100.7", " ann@example.COM ")
    assert caught.value.retry_after_ms == 90_000
    with pytest.raises(RateLimited):
        await limiter.check("198.51.100.7", "someone-else@example.com")
    # The owner, from anywhere else, is not locked out.
    await limiter.check("203.0.113.50", "ann@example.com")

    clock.advance(90_000)
    await limiter.check("198.51.100.7", "ann@example.com")


async def test_a_hundred_failures_from_many_ips_lock_the_account_everywhere(
    store: MemoryBucketStore, clock: Clock
) -> None:
    limiter = LoginLimiter(store, settings())
    for n in range(100):
        ip = f"198.51.100.{n // 5}"  # 20 addresses, 5 guesses each: no IP is locked
        await limiter.check(ip, "ann@example.com")
        await limiter.record_failure(ip, "ann@example.com")
    with pytest.raises(RateLimited) as caught:
        await limiter.check("203.0.113.50", "ann@example.com")
    assert caught.value.retry_after_ms == 9_000  # 100 per 15 minutes: one back every 9 s
    await limiter.check("203.0.113.50", "bob@example.com")
    clock.advance(9_000)
    await limiter.check("203.0.113.50", "ann@example.com")


async def test_the_account_limit_has_its_own_setting(store: MemoryBucketStore) -> None:
    limiter = LoginLimiter(store, settings(login_account_rate=3))
    for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        await limiter.record_failure(ip, "ann@example.com")
    with pytest.raises(RateLimited):
        await limiter.check("198.51.100.4", "ann@example.com")


async def test_login_checks_and_successes_consume_nothing(store: MemoryBucketStore) -> None:
    limiter = LoginLimiter(store, settings())
    for _ in range(100):
        await limiter.check("198.51.100.7", "ann@example.com")
    for _ in range(9):
        await limiter.record_failure("198.51.100.7", "ann@example.com")
    await limiter.check("198.51.100.7", "ann@example.com")


async def test_login_buckets_hold_no_email_address(store: MemoryBucketStore) -> None:
    limiter = LoginLimiter(store, settings())
    await limiter.record_failure("198.51.100.7", "ann@example.com")
    held = [key for lane in store._lanes.values() for key in lane]
    assert len(held) == 3
    assert not any("ann" in key for key in held)


async def test_the_login_limit_holds_in_production_even_with_rate_limits_off(
    store: MemoryBucketStore,
) -> None:
    limiter = LoginLimiter(store, settings(app_env="production", rate_limit_enabled=False))
    for _ in range(10):
        await limiter.record_failure("198.51.100.7", "ann@example.com")
    before = refusals("login_pair", "remote")
    with pytest.raises(RateLimited):
        await limiter.check("198.51.100.7", "ann@example.com")
    assert refusals("login_pair", "remote") == before + 1


async def test_tests_and_development_may_turn_the_login_limit_off(
    store: MemoryBucketStore,
) -> None:
    for env in ("test", "development"):
        limiter = LoginLimiter(store, settings(app_env=env, rate_limit_enabled=False))
        for _ in range(50):
            await limiter.record_failure("127.0.0.1", "ann@example.com")
            await limiter.check("127.0.0.1", "ann@example.com")


# --- socket events ---------------------------------------------------------------------


def test_a_socket_gets_a_burst_of_50_then_20_events_a_second() -> None:
    now = Seconds()
    limiter = SocketEventLimiter(settings(), clock=now)
    assert all(limiter.hit().allowed for _ in range(50))
    refused = limiter.hit()
    assert (refused.allowed, refused.retry_after_ms) == (False, 50)
    now.now += 1.0
    assert sum(limiter.hit().allowed for _ in range(40)) == 20
    assert not limiter.flooding


def test_a_socket_that_keeps_flooding_is_flagged_and_stays_flagged() -> None:
    now = Seconds()
    limiter = SocketEventLimiter(settings(), localhost=True, clock=now, flood_refusals=10)
    before = refusals("socket_event", "localhost")
    for _ in range(50 + 9):
        limiter.hit()
    assert not limiter.flooding
    limiter.hit()
    assert limiter.flooding
    assert refusals("socket_event", "localhost") == before + 10
    now.now += 60
    assert limiter.hit().allowed
    assert limiter.flooding


def test_occasional_refusals_spread_over_time_are_not_flooding() -> None:
    now = Seconds()
    limiter = SocketEventLimiter(settings(), clock=now, flood_refusals=5, flood_window=5.0)
    for _ in range(50):
        limiter.hit()
    for _ in range(20):
        now.now += 3.0  # refills 60 tokens: spend them, then one refusal
        while limiter.hit().allowed:
            pass
    assert not limiter.flooding


def test_socket_event_limits_are_off_when_rate_limits_are() -> None:
    limiter = SocketEventLimiter(settings(rate_limit_enabled=False), clock=Seconds())
    assert all(limiter.hit().allowed for _ in range(10_000))
    assert not limiter.flooding
