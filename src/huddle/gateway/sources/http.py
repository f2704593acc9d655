"""`HttpSource`: the gateway's user data from the REST API at BACKEND_URL.

A socket's data (`fetch`) comes from `POST /api/internal/bootstrap` with the
service credential (`Settings.service_credential`): concurrent fetches are
coalesced (`batch.Coalescer`, a 2 ms window and while a batch is in flight)
into one request of up to 100 sockets' verified claims, and the API admits
each as it would the token itself (unknown or disabled user, revoked user or
family: the matching AuthError for that socket alone). Without a credential,
or when the API answers 404 (an older API, or one without a credential) or
refuses the credential, fetches go the old way for `DECLINED_FOR` seconds:
three requests with the user's own token (`/users/me`, `/users/{id}/teams`,
`/users/{id}/tasks`). Refresh and replay always carry the user's own token,
so the API applies the same rules to the gateway as to the user. One pooled `httpx.AsyncClient`;
BACKEND_TIMEOUT bounds each call (all the requests of a `fetch` together);
a connection error is retried once (the request never reached the API, so
this is safe even for a refresh); a `CircuitBreaker` stops calls to a dead
backend; a `UserDataCache` keeps the last good data for degraded answers; a
`RecoveryWatch` probes `/readyz` after a failure and runs the `on_recovered`
callbacks when the API answers again. The contract is in `huddle.gateway.sources.base`.

Metrics: `huddle_gateway_backend_request_seconds{endpoint}` per HTTP request
(endpoints `bootstrap`, `users_me`, `user_teams`, `user_tasks`, `auth_refresh`,
`events`, `readyz`), `huddle_gateway_backend_batch_size` per bootstrap batch,
`huddle_gateway_backend_failures_total{reason}` per failed call (a batch is one)
(`connect`, `timeout`, `transport`, `http_5xx`, `http_4xx`, `bad_response`,
`not_ready`, `breaker_open`), `huddle_gateway_circuit_breaker_state`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from huddle.config import Settings
from huddle.errors import (
    AuthError,
    BackendUnavailable,
    BadRequest,
    ConfigError,
    RefreshTokenExpired,
    RefreshTokenInvalid,
    RefreshTokenReused,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
)
from huddle.events.items import MAX_PAGE, envelope_of_item
from huddle.events.types import StaleData
from huddle.gateway.sources.base import (
    MAX_TASKS,
    MAX_TEAMS,
    RecoveredCallback,
    RefreshedTokens,
    Replay,
    UserData,
    fallback,
)
from huddle.gateway.sources.batch import Coalescer
from huddle.gateway.sources.breaker import BreakerState, CircuitBreaker
from huddle.gateway.sources.cache import UserDataCache
from huddle.gateway.sources.recovery import RecoveryWatch
from huddle.logging import get_logger
from huddle.metrics import BACKEND_BATCH_SIZE, BACKEND_FAILURES, BACKEND_LATENCY
from huddle.security.tokens import Claims

log = get_logger("huddle.gateway.sources.http")

T = TypeVar("T")

PAGE_SIZE = 100  # the REST API's largest page
MAX_BATCH = 100  # sockets per bootstrap request (the API's limit)
BATCH_WINDOW = 0.002
"""Seconds a bootstrap batch gathers fetches before it is sent (when none is in flight)."""
BATCH_GRACE = 0.05
"""Seconds past BACKEND_TIMEOUT a socket waits for its batch to time out on its own."""
DECLINED_FOR = 60.0
"""Seconds the three-request path serves after the API declined the batched route."""
BOOTSTRAP_PATH = "/api/internal/bootstrap"

SessionKey = tuple[int, float, str | None]
"""What the API admits a socket by: user id, `iat`, refresh family."""

_TOKEN_ERRORS: dict[str, type[AuthError]] = {
    "TOKEN_EXPIRED": TokenExpired,
    "TOKEN_REVOKED": TokenRevoked,
    "TOKEN_INVALID": TokenInvalid,
}
_REFRESH_ERRORS: dict[str, type[AuthError]] = {
    "REFRESH_TOKEN_EXPIRED": RefreshTokenExpired,
    "REFRESH_TOKEN_INVALID": RefreshTokenInvalid,
    "REFRESH_TOKEN_REUSED": RefreshTokenReused,
}


class BackendFailure(Exception):
    """The backend did not answer usably; `reason` is the metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BatchDeclined(Exception):
    """The API has no batched bootstrap for this gateway (404) or refuses its credential."""


class HttpSource:
    """User data from the REST API at BACKEND_URL, with the user's own token.

    One pooled `httpx.AsyncClient`; BACKEND_TIMEOUT bounds each call (every
    request of a `fetch` together); connection errors are retried once (the
    request never reached the API, so this is safe even for a refresh);
    a `CircuitBreaker` stops calls to a dead backend; a `UserDataCache` keeps
    the last good data for degraded answers.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        cache_ttl: float = 60.0,
        probe_interval: float = 2.0,
        page_size: int = PAGE_SIZE,
        batch_window: float = BATCH_WINDOW,
        batch: bool = True,
    ) -> None:
        if not settings.backend_url:
            raise ConfigError("BACKEND_URL: required for huddle gateway")
        self._timeout = settings.backend_timeout
        self._page_size = page_size
        self._client = httpx.AsyncClient(
            base_url=settings.backend_url.rstrip("/"),
            timeout=httpx.Timeout(settings.backend_timeout),
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0
            ),
            headers={"Accept": "application/json", "User-Agent": "huddle-gateway"},
            follow_redirects=False,
        )
        self.breaker = CircuitBreaker(threshold=failure_threshold, reset_after=reset_after)
        self.cache = UserDataCache(
            ttl=cache_ttl, redis_url=settings.redis_url, prefix=settings.redis_prefix
        )
        self._watch = RecoveryWatch(
            self._probe, interval=probe_interval, not_before=self.breaker.retry_in
        )
        credential = settings.service_credential()
        self._service_headers = (
            {"Authorization": f"Service {credential}"} if credential and batch else None
        )
        self._declined_until = 0.0
        self._batches: Coalescer[SessionKey, UserData] = Coalescer(
            self._send_batch,
            window=batch_window,
            max_batch=MAX_BATCH,
            on_batch=BACKEND_BATCH_SIZE.observe,
        )

    @property
    def healthy(self) -> bool:
        """False from a failed backend call until the next successful one."""
        return self._watch.healthy

    async def fetch(self, claims: Claims, token: str) -> UserData:
        user_id = claims.user_id
        started_at = time.time()
        try:
            if self._batched():
                try:
                    data = await self._fetch_batched(claims)
                except BatchDeclined:
                    data = await self._call("fetch", lambda: self._fetch(user_id, token))
            else:
                data = await self._call("fetch", lambda: self._fetch(user_id, token))
        except BackendFailure:
            cached = await self.cache.get(user_id)
            return replace(cached, degraded=True) if cached else fallback(user_id)
        await self.cache.put(user_id, data, started_at=started_at)
        return data

    def _batched(self) -> bool:
        return self._service_headers is not None and time.monotonic() >= self._declined_until

    async def _fetch_batched(self, claims: Claims) -> UserData:
        """This socket's answer from a coalesced bootstrap request, within BACKEND_TIMEOUT."""
        key: SessionKey = (claims.user_id, claims.issued_at, claims.family_id)
        try:
            # The batch keeps its oldest socket's deadline and fails (counted once) by
            # then; this bound is only a safety net.
            async with asyncio.timeout(self._timeout + BATCH_GRACE):
                return await self._batches.get(key)
        except TimeoutError:
            self._failed("fetch", "timeout")
            raise BackendFailure("timeout") from None

    async def rotate(self, refresh_token: str) -> RefreshedTokens:
        try:
            return await self._call("rotate", lambda: self._rotate(refresh_token))
        except BackendFailure:
            raise BackendUnavailable() from None

    async def replay(self, user_id: int, token: str, after: int) -> Replay:
        if after < 0:
            raise BadRequest("lastEventId must be a non-negative integer.")
        try:
            return await self._call("replay", lambda: self._replay(token, after))
        except BackendFailure:
            raise BackendUnavailable() from None

    def invalidate(self, stale: StaleData) -> None:
        self.cache.drop(stale)

    def on_recovered(self, callback: RecoveredCallback) -> None:
        self._watch.on_recovered(callback)

    async def start(self) -> None:
        await self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()
        await self._batches.aclose()
        await self._client.aclose()
        await self.cache.aclose()

    # --- one logical call: breaker, deadline, outcome -----------------------

    async def _call(
        self, op: str, work: Callable[[], Awaitable[T]], *, budget: float | None = None
    ) -> T:
        if not self.breaker.allow():
            BACKEND_FAILURES.labels(reason="breaker_open").inc()
            raise BackendFailure("breaker_open")
        try:
            async with asyncio.timeout(self._timeout if budget is None else max(budget, 0)):
                result = await work()
        except BackendFailure as exc:
            self._failed(op, exc.reason)
            raise
        except TimeoutError:
            self._failed(op, "timeout")
            raise BackendFailure("timeout") from None
        except (AuthError, BatchDeclined):
            self._succeeded()  # the backend answered; the token (or the route) is what failed
            raise
        except BaseException:
            self.breaker.release()
            raise
        self._succeeded()
        return result

    def _succeeded(self) -> None:
        self.breaker.success()
        self._watch.succeeded()

    def _failed(self, op: str, reason: str) -> None:
        BACKEND_FAILURES.labels(reason=reason).inc()
        self.breaker.failure()
        self._watch.failed(op, reason)

    async def _probe(self) -> None:
        """One cheap request while the backend is marked down.

        While the breaker is closed, a probe's failure does not count toward
        opening it: the breaker guards the backend from clients' calls, and a
        probe every few seconds is none. Otherwise a backend down for five probe
        intervals opened the breaker with nobody calling, and its return went
        unnoticed for the breaker's 30 s. An open breaker is probed only when it
        half-opens, as its one trial (SPEC §4.5).
        """
        if self.breaker.retry_in() > 0:
            return  # still open: the watch sleeps until it may try
        if self.breaker.state is not BreakerState.CLOSED:
            await self._call("probe", self._ready)
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._ready()
        except BackendFailure as exc:
            BACKEND_FAILURES.labels(reason=exc.reason).inc()
            self._watch.failed("probe", exc.reason)
            raise
        except TimeoutError:
            BACKEND_FAILURES.labels(reason="timeout").inc()
            self._watch.failed("probe", "timeout")
            raise BackendFailure("timeout") from None
        self._succeeded()

    # --- the requests -------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        token: str | None = None,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        accept_5xx: bool = False,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request, retried once on a connection error; 5xx and transport errors raise."""
        if token:
            headers = {"Authorization": f"Bearer {token}"}
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                response = await self._client.request(
                    method, path, headers=headers, params=params, json=body
                )
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == 1:
                    continue
                raise BackendFailure("connect") from None
            except httpx.TimeoutException:
                raise BackendFailure("timeout") from None
            except httpx.HTTPError:
                raise BackendFailure("transport") from None
            finally:
                BACKEND_LATENCY.labels(endpoint=endpoint).observe(time.perf_counter() - started)
            if response.status_code >= 500 and not accept_5xx:
                raise BackendFailure("http_5xx")
            return response
        raise BackendFailure("connect")  # unreachable: the loop returns or raises

    async def _get(
        self, path: str, endpoint: str, token: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = await self._request("GET", path, endpoint, token=token, params=params)
        if response.status_code == 401:
            raise _TOKEN_ERRORS.get(_error_code(response), TokenInvalid)()
        if response.status_code != 200:
            log.warning("backend_unexpected_status", endpoint=endpoint, status=response.status_code)
            raise BackendFailure("http_4xx")
        return _json_object(response)

    async def _fetch(self, user_id: int, token: str) -> UserData:
        results = await asyncio.gather(
            self._get("/api/users/me", "users_me", token),
            self._pages(f"/api/users/{user_id}/teams", "user_teams", token, MAX_TEAMS),
            self._pages(f"/api/users/{user_id}/tasks", "user_tasks", token, MAX_TASKS),
            return_exceptions=True,
        )
        for result in results:  # an answer about the token outranks a failure
            if isinstance(result, AuthError):
                raise result
        user, teams, tasks = results
        if isinstance(user, dict) and user.get("id") != user_id:
            raise TokenInvalid()  # the token belongs to someone else
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if not isinstance(user, dict) or not isinstance(teams, list) or not isinstance(tasks, list):
            raise BackendFailure("bad_response")
        return UserData(user=user, teams=teams, tasks=tasks)

    async def _send_batch(
        self, keys: list[SessionKey], first_asked: float
    ) -> dict[SessionKey, UserData | BaseException]:
        """One bootstrap request for the keys, as one logical call (breaker, and the
        deadline of the socket that has waited longest)."""
        left = self._timeout - (asyncio.get_running_loop().time() - first_asked)
        return await self._call("bootstrap", lambda: self._bootstrap(keys), budget=left)

    async def _bootstrap(
        self, keys: list[SessionKey]
    ) -> dict[SessionKey, UserData | BaseException]:
        body = {
            "sessions": [
                {"userId": user_id, "issuedAt": issued_at, "familyId": family}
                for user_id, issued_at, family in keys
            ]
        }
        response = await self._request(
            "POST", BOOTSTRAP_PATH, "bootstrap", body=body, headers=self._service_headers
        )
        if response.status_code in (401, 403, 404):
            self._declined_until = time.monotonic() + DECLINED_FOR
            if response.status_code == 404:
                log.info("backend_has_no_batched_bootstrap", retry_in=DECLINED_FOR)
            else:  # the two sides hold different credentials: a configuration error
                log.error(
                    "service_credential_refused",
                    status=response.status_code,
                    code=_error_code(response),
                    hint="give the API and every gateway the same JWT_SECRET or SERVICE_TOKEN",
                )
            raise BatchDeclined()
        if response.status_code != 200:
            log.warning(
                "backend_unexpected_status", endpoint="bootstrap", status=response.status_code
            )
            raise BackendFailure("http_4xx")
        answer = _json_object(response)
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(keys):
            raise BackendFailure("bad_response")
        head = answer.get("head")  # an older API sends none
        if type(head) is not int or head < 0:
            head = None
        out: dict[SessionKey, UserData | BaseException] = {}
        for key, result in zip(keys, results, strict=True):
            out[key] = _session_result(key[0], result, head)
        return out

    async def _pages(self, path: str, endpoint: str, token: str, cap: int) -> list[dict[str, Any]]:
        """Items of a `{items, nextCursor}` list, following cursors up to `cap` items."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(items) < cap:
            params: dict[str, Any] = {"limit": min(self._page_size, cap - len(items))}
            if cursor:
                params["cursor"] = cursor
            page = await self._get(path, endpoint, token, params)
            batch = page.get("items")
            if not isinstance(batch, list) or not all(isinstance(i, dict) for i in batch):
                raise BackendFailure("bad_response")
            items.extend(batch)
            nxt = page.get("nextCursor")
            if not isinstance(nxt, str) or not nxt:
                break
            cursor = nxt
        return items[:cap]

    async def _rotate(self, refresh_token: str) -> RefreshedTokens:
        response = await self._request(
            "POST", "/api/auth/refresh", "auth_refresh", body={"refresh_token": refresh_token}
        )
        if response.status_code == 401:
            raise _REFRESH_ERRORS.get(_error_code(response), RefreshTokenInvalid)()
        if response.status_code in (400, 422):
            raise RefreshTokenInvalid()
        if response.status_code != 200:
            log.warning(
                "backend_unexpected_status", endpoint="auth_refresh", status=response.status_code
            )
            raise BackendFailure("http_4xx")
        data = _json_object(response)
        try:
            return RefreshedTokens(
                access_token=str(data["access_token"]),
                refresh_token=str(data["refresh_token"]),
                expires_in=int(data["expires_in"]),
            )
        except (KeyError, TypeError, ValueError):
            raise BackendFailure("bad_response") from None

    async def _replay(self, token: str, after: int) -> Replay:
        data = await self._get("/api/events", "events", token, {"after": after, "limit": MAX_PAGE})
        try:
            events = [envelope_of_item(item) for item in data["items"]]
            last = int(data["lastEventId"])
            return Replay(
                events=events,
                resync_required=bool(data["resyncRequired"]),
                last_event_id=last,
                more=data.get("nextCursor") is not None,
            )
        except (KeyError, TypeError, ValueError):
            raise BackendFailure("bad_response") from None

    async def _ready(self) -> None:
        """/readyz answers, and the database behind it is up (Redis is not needed for data)."""
        response = await self._request("GET", "/readyz", "readyz", accept_5xx=True)
        if response.status_code == 200:
            return
        checks = _json_object(response).get("checks") if response.status_code == 503 else None
        if not isinstance(checks, dict) or checks.get("database") != "ok":
            raise BackendFailure("not_ready")


def _session_result(user_id: int, result: Any, head: int | None) -> UserData | BaseException:
    """One socket's entry of a bootstrap answer: its data (read after the log's `head`),
    or the refusal of its token."""
    if not isinstance(result, dict) or result.get("userId") != user_id:
        return BackendFailure("bad_response")
    error = result.get("error")
    if isinstance(error, dict):
        return _TOKEN_ERRORS.get(str(error.get("code", "")), TokenInvalid)()
    user, teams, tasks = result.get("user"), result.get("teams"), result.get("tasks")
    if not isinstance(user, dict) or user.get("id") != user_id:
        return BackendFailure("bad_response")
    if not isinstance(teams, list) or not isinstance(tasks, list):
        return BackendFailure("bad_response")
    return UserData(user=user, teams=teams, tasks=tasks, head=head)


def _error_code(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        return str(error.get("code", "")) if isinstance(error, dict) else ""
    except (ValueError, AttributeError):
        return ""


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise BackendFailure("bad_response") from None
    if not isinstance(data, dict):
        raise BackendFailure("bad_response")
    return data
