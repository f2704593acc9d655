"""The rate limits of SPEC §5: connection attempts, failed logins, socket events.

    ConnectionLimiter   per client IP, before any backend call; expired-token
                        attempts have their own bucket and never touch the normal one
    LoginLimiter        failed logins (and password changes) per IP and account pair,
                        per IP, and per account from all IPs
    SocketEventLimiter  one per socket, in process; says when a socket keeps flooding

The first two keep their buckets in a `BucketStore` (`buckets.py`): memory by
default, Redis when `REDIS_URL` is set (`create_bucket_store`). Refusals are
counted in `huddle_rate_limit_refusals_total{limit, scope}`, where `scope` is
`localhost` or `remote`.

`RATE_LIMIT_ENABLED=false` turns off the connection and socket-event limits,
for benchmarks. It never turns off the login limit in production: that one
guards passwords, not capacity. In development and test it does, so test
suites can log in with wrong passwords as often as they like.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable

from prometheus_client import Counter

from huddle.config import Settings
from huddle.errors import RateLimited
from huddle.logging import get_logger
from huddle.security.buckets import (
    BucketStore,
    Decision,
    MemoryBucketStore,
    RedisBucketStore,
)
from huddle.security.client_ip import is_loopback, parse_ip

__all__ = [
    "REFUSALS",
    "BucketStore",
    "ConnectionLimiter",
    "Decision",
    "LoginLimiter",
    "MemoryBucketStore",
    "RedisBucketStore",
    "SocketEventLimiter",
    "create_bucket_store",
    "rate_key",
]

log = get_logger("huddle.ratelimit")

LIMITS = (
    "connection",
    "expired_token",
    "login_pair",
    "login_ip",
    "login_account",
    "socket_event",
)
SCOPES = ("localhost", "remote")

REFUSALS = Counter(
    "huddle_rate_limit_refusals",
    "Attempts refused by a rate limit, by limit and by localhost/remote client",
    ["limit", "scope"],
)
# Every series exists from the start (at 0), so dashboards and `rate()` see it.
_REFUSED = {(limit, scope): REFUSALS.labels(limit, scope) for limit in LIMITS for scope in SCOPES}


def _refused(limit: str, localhost: bool) -> None:
    _REFUSED[limit, "localhost" if localhost else "remote"].inc()


def rate_key(ip: str) -> str:
    """The identity a client IP is limited under: the address, or its /64 for IPv6.

    One IPv6 host usually owns a whole /64, so limiting single addresses would
    let it rotate through 2**64 fresh buckets.
    """
    address = parse_ip(ip)
    if address is None:
        return ip
    if address.version == 6 and not address.is_loopback:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def create_bucket_store(settings: Settings) -> BucketStore:
    """The store settings ask for: Redis when `REDIS_URL` is set, else memory."""
    if settings.redis_url:
        return RedisBucketStore.from_url(
            settings.redis_url, prefix=settings.redis_prefix, window_ms=settings.connection_window
        )
    return MemoryBucketStore(window_ms=settings.connection_window)


class ConnectionLimiter:
    """Token buckets for connection attempts per client IP (SPEC §5)."""

    def __init__(self, store: BucketStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    async def check(self, ip: str, *, expired: bool, localhost: bool) -> Decision:
        """Charge one attempt from `ip`; a refused Decision carries `retry_after_ms`.

        `ip` is the client IP from `client_ip()`. Pass `expired=True` when the
        attempt's access token decoded fine but has expired: it is charged to
        the expired-token bucket only, so a client refreshing after a sleep
        never loses its normal attempts. Call this before any backend call.
        `localhost`: `ClientAddress.localhost` (never true for a forwarded
        address, whatever it says).
        """
        s = self._settings
        local = localhost
        if expired:
            limit = "expired_token"
            capacity = s.max_expired_attempts_localhost if local else s.max_expired_attempts
            refill_ms = s.expired_token_cooldown
        else:
            limit = "connection"
            capacity = s.max_connections_localhost if local else s.max_connections_per_ip
            refill_ms = s.connection_cooldown_localhost if local else s.connection_cooldown
        if not s.rate_limit_enabled:
            return Decision(True, 0, capacity)
        decision = await self._store.take(f"{limit}:{rate_key(ip)}", capacity, refill_ms)
        if not decision.allowed:
            _refused(limit, local)
            log.debug(
                "rate_limited", limit=limit, client_ip=ip, retry_after=decision.retry_after_ms
            )
        return decision


class LoginLimiter:
    """Failed logins per `LOGIN_WINDOW` (SPEC §5), in three buckets:

    - `login_pair`: one client IP guessing one account, `LOGIN_RATE` (10);
    - `login_ip`: one client IP, whatever the accounts, `LOGIN_RATE` (10);
    - `login_account`: one account from every IP together, `LOGIN_ACCOUNT_RATE`
      (100), so that a stranger's ten wrong guesses lock the stranger out, not
      the owner signing in from elsewhere, while a guesser spread over many
      addresses is still stopped.

    Each is a token bucket that refills one every `window / capacity` (90 s for
    10 per 15 minutes, 9 s for 100). Only failures consume, so colleagues behind
    one NAT who type their passwords right are never held back. Attempts running
    concurrently all pass `check` before any of them fails, so a burst can
    overshoot by the number in flight; password hashing keeps that number small.
    The password-change route counts as a login for the caller's own account.
    """

    def __init__(self, store: BucketStore, settings: Settings) -> None:
        self._store = store
        window_ms = settings.login_window * 1000
        self._per_ip = (settings.login_rate, math.ceil(window_ms / settings.login_rate))
        self._per_account = (
            settings.login_account_rate,
            math.ceil(window_ms / settings.login_account_rate),
        )
        self._enabled = settings.rate_limit_enabled or settings.is_production

    async def check(self, ip: str, email: str) -> None:
        """Raise `RateLimited` when any of the three buckets is empty; consumes nothing.

        Call it before verifying the password, so a locked-out guesser learns
        nothing even from a right guess.
        """
        if not self._enabled:
            return
        wait = 0
        for limit, key, (capacity, refill_ms) in self._buckets(ip, email):
            decision = await self._store.peek(key, capacity, refill_ms)
            if not decision.allowed:
                _refused(limit, is_loopback(ip))
                wait = max(wait, decision.retry_after_ms)
        if wait:
            log.debug("rate_limited", limit="login", client_ip=ip, retry_after=wait)
            raise RateLimited(wait)

    async def record_failure(self, ip: str, email: str) -> None:
        """Charge a failed login to the pair, the IP and the account."""
        if not self._enabled:
            return
        for _, key, (capacity, refill_ms) in self._buckets(ip, email):
            await self._store.take(key, capacity, refill_ms)

    def _buckets(self, ip: str, email: str) -> list[tuple[str, str, tuple[int, int]]]:
        # Hashed, so Redis key listings and memory dumps hold no addresses.
        account = hashlib.blake2b(email.strip().lower().encode(), digest_size=16).hexdigest()
        client = rate_key(ip)
        return [
            ("login_pair", f"login_pair:{client}:{account}", self._per_ip),
            ("login_ip", f"login_ip:{client}", self._per_ip),
            ("login_account", f"login_account:{account}", self._per_account),
        ]


class SocketEventLimiter:
    """One socket's event budget: `SOCKET_EVENT_RATE` per second, bursts of `SOCKET_EVENT_BURST`.

    Keep one per socket (in its session) and call `hit()` for every event; it
    is plain arithmetic, no I/O and no lock. A socket refused `flood_refusals`
    times (default: the burst) within `flood_window` seconds keeps sending
    after being told to stop: `flooding` turns true and stays true, and the
    caller should disconnect it.
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_enabled",
        "_flood_refusals",
        "_flood_window",
        "_flooding",
        "_rate",
        "_refusal_counter",
        "_refusals",
        "_stamp",
        "_tokens",
        "_window_start",
    )

    def __init__(
        self,
        settings: Settings,
        *,
        localhost: bool = False,
        clock: Callable[[], float] = time.monotonic,
        flood_refusals: int | None = None,
        flood_window: float = 5.0,
    ) -> None:
        self._rate = settings.socket_event_rate
        self._burst = float(settings.socket_event_burst)
        self._enabled = settings.rate_limit_enabled
        self._clock = clock
        self._tokens = self._burst
        self._stamp = clock()
        self._flood_refusals = flood_refusals or settings.socket_event_burst
        self._flood_window = flood_window
        self._window_start = -math.inf
        self._refusals = 0
        self._flooding = False
        self._refusal_counter = _REFUSED["socket_event", "localhost" if localhost else "remote"]

    @property
    def flooding(self) -> bool:
        """True once the socket has ignored enough refusals to be disconnected."""
        return self._flooding

    def hit(self) -> Decision:
        """Charge one event; a refused Decision says when the next one would pass."""
        if not self._enabled:
            return Decision(True, 0, int(self._burst))
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Decision(True, 0, int(self._tokens))
        self._refusal_counter.inc()
        if now - self._window_start > self._flood_window:
            self._window_start = now
            self._refusals = 0
        self._refusals += 1
        if self._refusals >= self._flood_refusals:
            self._flooding = True
        wait_ms = math.ceil((1.0 - self._tokens) / self._rate * 1000)
        return Decision(False, max(1, wait_ms), 0)
