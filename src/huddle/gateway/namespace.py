"""The Socket.IO handlers of SPEC §4 (namespace `/`).

Every connection is accepted, so the client can always be told what to do:
an `authentication_error` whose `action` says whether to log in, refresh or
retry. Client events answer through their acknowledgement callback
(`{ok, data}` / `{ok: false, error}`); a failure is also emitted as `error
{code, message}` for clients that send without a callback, except when an
`authentication_error` already said it.

Each client event runs in its own task (python-socketio's default), so
handlers that change a session's state take its lock. No handler raises into
python-socketio: a bug in one answers INTERNAL_ERROR to that socket only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import structlog

from huddle.clock import iso, utcnow
from huddle.config import Settings
from huddle.errors import (
    AuthError,
    BadRequest,
    ConnectionLimit,
    HuddleError,
    InternalError,
    NotFound,
    RateLimited,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenRevoked,
)
from huddle.gateway import payloads
from huddle.gateway.hub import Hub
from huddle.gateway.relay import EventRelay
from huddle.gateway.replay import synchronize
from huddle.gateway.session import SocketSession, State
from huddle.gateway.userdata import UserDataSource
from huddle.logging import get_logger
from huddle.metrics import CONNECTION_ATTEMPTS, SOCKETS_OPEN
from huddle.security.client_ip import LoopbackProxyWarning, client_ip, is_loopback, peer_ip
from huddle.security.ratelimit import ConnectionLimiter, SocketEventLimiter
from huddle.security.tokens import Claims, TokenService

log = get_logger("huddle.gateway")

Handler = Callable[[SocketSession, tuple[Any, ...]], Awaitable[Any]]

SHUTDOWN_RETRY_MS = (1000, 5000)
"""`server_shutdown.retryAfter` is drawn from this range, so clients spread their reconnects."""
REVOCATION_MEMORY = 86_400.0
"""Seconds a `sessions_revoked` is remembered beyond the access-token lifetime."""


class Reported(Exception):
    """An error the client was already told about with `authentication_error`."""

    def __init__(self, error: HuddleError) -> None:
        super().__init__(error.code)
        self.error = error


class GatewayNamespace:
    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        *,
        tokens: TokenService,
        source: UserDataSource,
        limiter: ConnectionLimiter,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.tokens = tokens
        self.source = source
        self.limiter = limiter
        self.relay = EventRelay(hub, source, self.on_sessions_revoked)
        self.shutting_down = False
        self._revoked: dict[int, float] = {}
        self._proxy_warning = LoopbackProxyWarning(settings)
        self._jitter = random.Random()  # noqa: S311 - spreading reconnects, not a secret
        source.on_recovered(self.recover_degraded)

    def register(self, sio: Any) -> None:
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        events: dict[str, Handler] = {
            "authenticate": self._on_authenticate,
            "refresh_token": self._on_refresh_token,
            "team_presence": self._on_team_presence,
            "resume": self._on_resume,
        }
        for name, handler in events.items():
            sio.on(name, self._client_event(name, handler))
        sio.on("*", self.on_unknown)

    # --- connection --------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        scope = environ.get("asgi.scope") or {}
        ip = client_ip(scope, self.settings.trusted_networks)
        self._proxy_warning.observe(peer_ip(scope))
        session = SocketSession(
            sid, ip, SocketEventLimiter(self.settings, localhost=is_loopback(ip))
        )
        self.hub.sessions.add(session)
        SOCKETS_OPEN.inc()
        with structlog.contextvars.bound_contextvars(sid=sid, client_ip=ip):
            try:
                async with session.lock:
                    await self._connect(session, environ, auth)
            except Reported:
                pass
            except Exception:
                log.exception("socket_connect_failed")
                await self.hub.send_error(session, InternalError())
                await self.hub.terminate(session)

    async def _connect(self, session: SocketSession, environ: dict[str, Any], auth: Any) -> None:
        if self.shutting_down:
            CONNECTION_ATTEMPTS.labels(outcome="shutting_down").inc()
            await self.hub.send(session, "server_shutdown", {"retryAfter": self._retry_after()})
            await self.hub.terminate(session)
            return
        handshake = payloads.handshake(auth, environ.get("HTTP_AUTHORIZATION"))
        if handshake.malformed:
            await self.hub.send_error(session, BadRequest(handshake.malformed))
        # Decode the token locally first (no I/O): an expired one is charged to
        # its own bucket, so a client coming back from sleep keeps its attempts.
        expired = False
        if handshake.token is not None:
            try:
                self.tokens.verify_access(handshake.token)
            except TokenExpired:
                expired = True
            except AuthError:
                pass
        try:
            decision = await self.limiter.check(session.client_ip, expired=expired)
        except Exception as exc:  # the limiter must never refuse everyone
            log.warning("connection_limiter_failed", error=type(exc).__name__)
        else:
            if not decision.allowed:
                CONNECTION_ATTEMPTS.labels(outcome="rate_limited").inc()
                await self.hub.reject(session, RateLimited(decision.retry_after_ms))
                return
        if handshake.token is None:
            CONNECTION_ATTEMPTS.labels(outcome="awaiting_token").inc()
            session.missed_after = handshake.last_event_id
            session.schedule(
                "auth_timeout",
                self.settings.auth_timeout,
                lambda: self.hub.spawn(self._auth_timeout(session), "auth-timeout"),
            )
            return
        try:
            await self.authenticate(session, handshake.token, replay_after=handshake.last_event_id)
        except Reported as reported:
            outcome = "expired" if isinstance(reported.error, TokenExpired) else "rejected"
            CONNECTION_ATTEMPTS.labels(outcome=outcome).inc()
            return
        CONNECTION_ATTEMPTS.labels(outcome="authenticated").inc()

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.hub.sessions.get(sid)
        if session is None:
            return
        try:
            if not session.closed:
                await self.hub.leave_all(session)
                self.hub.set_state(session, State.CLOSED)
            session.cancel_all()
        finally:
            self.hub.sessions.remove(session)
            SOCKETS_OPEN.dec()
        log.debug("socket_disconnected", sid=sid, user_id=session.user_id, reason=str(reason))

    # --- authentication ----------------------------------------------------

    async def authenticate(
        self, session: SocketSession, token: str, *, replay_after: int | None
    ) -> dict[str, Any]:
        """Verify, fetch the user's data, join the rooms, emit `authenticated`, replay.

        Call with `session.lock` held. Raises `Reported` when the client was
        sent an `authentication_error` instead.
        """
        hub = self.hub
        try:
            claims = self.tokens.verify_access(token)
        except TokenExpired:
            await self.expire(session, replay_after)
            raise Reported(TokenExpired()) from None
        except AuthError as exc:
            await self._fail(session, exc)
        await self._check_admissible(session, claims)
        was = session.state
        same_user = session.user_id == claims.user_id
        hub.sessions.mark_syncing(session)
        head = self.relay.head
        try:
            data = await self.source.fetch(claims.user_id, token)
        except TokenExpired:
            hub.sessions.unmark_syncing(session)
            await self.expire(session, replay_after)
            raise Reported(TokenExpired()) from None
        except AuthError as exc:
            hub.sessions.unmark_syncing(session)
            await self._fail(session, exc)
        except BaseException:
            hub.sessions.unmark_syncing(session)
            raise
        if session.closed:
            hub.sessions.unmark_syncing(session)
            raise Reported(TokenRevoked())
        try:
            await self._check_admissible(session, claims)
        except Reported:
            hub.sessions.unmark_syncing(session)
            raise
        if not same_user:
            await hub.leave_all(session)
            session.team_ids.clear()
        hub.sessions.bind(session, claims.user_id)
        session.token = token
        session.issued_at = claims.issued_at
        session.expires_at = claims.expires_at
        session.user = data.user
        session.degraded = data.degraded
        hub.set_state(session, State.AUTHENTICATED)
        session.cancel("auth_timeout", "grace")
        if replay_after is None and was is State.EXPIRED and same_user:
            replay_after = session.missed_after
        session.missed_after = None
        body = {
            "success": True,
            "user": data.user,
            "teams": data.teams,
            "tasks": data.tasks,
            "timestamp": iso(utcnow()),
            "expiresAt": iso(claims.expires_at),
            "lastEventId": head,
            "degraded": data.degraded,
        }
        await hub.send(session, "authenticated", body)
        log.info(
            "socket_authenticated",
            sid=session.sid,
            user_id=claims.user_id,
            teams=len(data.teams),
            degraded=data.degraded,
        )
        await hub.join_user_room(session)
        await hub.set_teams(session, data.team_ids)
        self._schedule_expiry(session)
        await synchronize(
            hub, self.relay, self.source, session, head=head, replay_after=replay_after
        )
        return body

    async def _check_admissible(self, session: SocketSession, claims: Claims) -> None:
        """Revoked tokens and the per-user socket limit, checked without I/O."""
        revoked_at = self._revoked.get(claims.user_id)
        if revoked_at is not None and claims.issued_at < revoked_at:
            await self._fail(session, TokenRevoked())
        limit = self.settings.max_connections_per_user
        if self.hub.sessions.authenticated_count(claims.user_id, besides=session) >= limit:
            await self._fail(session, ConnectionLimit())

    async def _fail(self, session: SocketSession, error: HuddleError) -> NoReturn:
        await self.hub.reject(session, error)
        raise Reported(error)

    async def expire(self, session: SocketSession, last_event_id: int | None = None) -> None:
        """TOKEN_EXPIRED: out of every room, told to refresh, AUTH_GRACE to do it."""
        hub = self.hub
        if session.state is State.AUTHENTICATED:
            session.missed_after = self.relay.head
            await hub.leave_all(session)
        elif session.missed_after is None:
            session.missed_after = last_event_id
        if session.state is not State.EXPIRED:
            hub.set_state(session, State.EXPIRED)
            session.cancel("auth_timeout", "warn", "expire")
            session.schedule(
                "grace",
                self.settings.auth_grace,
                lambda: hub.spawn(self._grace_over(session), "auth-grace"),
            )
        await hub.report(session, TokenExpired())

    def _schedule_expiry(self, session: SocketSession) -> None:
        expires_at = session.expires_at
        now = time.time()
        warning = self.settings.token_expiry_warning
        if warning > 0:
            session.schedule(
                "warn",
                expires_at - warning - now,
                lambda: self.hub.spawn(self._warn(session, expires_at), "expiry-warning"),
            )
        session.schedule(
            "expire",
            expires_at + self.settings.jwt_leeway - now,
            lambda: self.hub.spawn(self._expired(session, expires_at), "expiry"),
        )

    async def _warn(self, session: SocketSession, expires_at: float) -> None:
        if session.authenticated and session.expires_at == expires_at:
            await self.hub.send(session, "token_expiring", {"expiresAt": iso(expires_at)})

    async def _expired(self, session: SocketSession, expires_at: float) -> None:
        async with session.lock:
            if session.authenticated and session.expires_at == expires_at:
                log.info("socket_token_expired", sid=session.sid, user_id=session.user_id)
                await self.expire(session)

    async def _auth_timeout(self, session: SocketSession) -> None:
        async with session.lock:
            if session.state is State.PENDING:
                await self.hub.reject(
                    session, TokenMissing("No access token was received in time. Please log in.")
                )

    async def _grace_over(self, session: SocketSession) -> None:
        async with session.lock:
            if session.state is State.EXPIRED:
                log.info("socket_grace_over", sid=session.sid, user_id=session.user_id)
                await self.hub.terminate(session)

    async def on_sessions_revoked(self, user_id: int, revoked_at: float) -> None:
        """A user logged out everywhere: their sockets holding older tokens go, now."""
        now = time.time()
        horizon = now - self.settings.jwt_access_ttl - REVOCATION_MEMORY
        for known, at in list(self._revoked.items()):
            if at < horizon:
                del self._revoked[known]
        self._revoked[user_id] = max(revoked_at, self._revoked.get(user_id, 0.0))
        for session in self.hub.sessions.of_user(user_id):
            if not session.closed and session.issued_at < revoked_at:
                await self.hub.reject(session, TokenRevoked())

    # --- client events -----------------------------------------------------

    def _client_event(self, name: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
        async def run(sid: str, *args: Any) -> Any:
            return await self._answer(sid, name, handler, args)

        run.__name__ = f"on_{name}"
        return run

    async def on_unknown(self, event: str, sid: str, *args: Any) -> Any:
        async def unknown(session: SocketSession, args: tuple[Any, ...]) -> Any:
            raise BadRequest("Unknown event.")

        return await self._answer(sid, "*", unknown, args)

    async def _answer(
        self, sid: str, name: str, handler: Handler, args: tuple[Any, ...]
    ) -> dict[str, Any] | None:
        session = self.hub.sessions.get(sid)
        if session is None or session.closed:
            return None
        with structlog.contextvars.bound_contextvars(
            sid=sid, client_ip=session.client_ip, user_id=session.user_id
        ):
            decision = session.limiter.hit()
            if not decision.allowed:
                limited = RateLimited(decision.retry_after_ms, "Too many events. Slow down.")
                if session.limiter.flooding:
                    log.warning("socket_flooding", event=name)
                    await self.hub.reject(session, limited)
                else:
                    await self.hub.send_error(session, limited)
                return payloads.failed(limited)
            try:
                return payloads.ok(await handler(session, args))
            except Reported as reported:
                return payloads.failed(reported.error)
            except HuddleError as exc:
                await self.hub.send_error(session, exc)
                return payloads.failed(exc)
            except Exception:
                log.exception("socket_handler_failed", event=name)
                error = InternalError()
                await self.hub.send_error(session, error)
                return payloads.failed(error)

    def _require_authenticated(self, session: SocketSession) -> None:
        if session.state is State.EXPIRED:
            raise TokenExpired()
        if session.state is not State.AUTHENTICATED:
            raise TokenMissing()

    async def _on_authenticate(self, session: SocketSession, args: tuple[Any, ...]) -> Any:
        token, last_event_id = payloads.authenticate(args)
        async with session.lock:
            if session.closed:
                raise TokenMissing()
            return await self.authenticate(session, token, replay_after=last_event_id)

    async def _on_refresh_token(self, session: SocketSession, args: tuple[Any, ...]) -> Any:
        request = payloads.refresh(args)
        async with session.lock:
            if session.closed:
                raise TokenMissing()
            refresh_token: str | None = None
            expires_in: int | None = None
            if request.kind == "refresh":
                try:
                    rotated = await self.source.rotate(request.value)
                except AuthError as exc:
                    await self._fail(session, exc)
                access_token = rotated.access_token
                refresh_token = rotated.refresh_token
                expires_in = rotated.expires_in
            else:
                access_token = request.value
            try:
                claims = self.tokens.verify_access(access_token)
            except TokenExpired:
                await self.expire(session)
                raise Reported(TokenExpired()) from None
            except AuthError as exc:
                await self._fail(session, exc)
            if session.user_id is not None and claims.user_id != session.user_id:
                await self._fail(session, TokenInvalid("The new token belongs to another user."))
            if expires_in is None:
                expires_in = max(0, int(claims.expires_at - time.time()))
            refreshed = {
                "accessToken": access_token,
                "refreshToken": refresh_token,
                "expiresIn": expires_in,
                "expiresAt": iso(claims.expires_at),
            }
            await self.hub.send(session, "token_refreshed", refreshed)
            log.info("socket_token_refreshed", sid=session.sid, user_id=claims.user_id)
            await self.authenticate(session, access_token, replay_after=None)
            return refreshed

    async def _on_team_presence(self, session: SocketSession, args: tuple[Any, ...]) -> Any:
        team_id = payloads.team_id(args, "team_presence")
        self._require_authenticated(session)
        if team_id not in session.team_ids:
            raise NotFound("Team not found.")
        return {"teamId": team_id, "online": self.hub.presence.online(team_id)}

    async def _on_resume(self, session: SocketSession, args: tuple[Any, ...]) -> Any:
        after = payloads.last_event_id(args, "resume")
        self._require_authenticated(session)
        async with session.lock:
            self._require_authenticated(session)
            self.hub.sessions.mark_syncing(session)
            head = self.relay.head
            try:
                result = await synchronize(
                    self.hub, self.relay, self.source, session, head=head, replay_after=after
                )
            except AuthError as exc:
                await self._fail(session, exc)
            return result.wire()

    # --- data recovery and shutdown ------------------------------------------

    async def recover_degraded(self) -> None:
        """The backend answers again: refetch for sockets that got degraded data.

        Each socket whose data comes back fresh gets `data_refreshed {teams, tasks}`.
        """
        groups: dict[int, list[SocketSession]] = {}
        for session in self.hub.sessions:
            if session.authenticated and session.degraded and session.user_id is not None:
                groups.setdefault(session.user_id, []).append(session)
        for user_id, sessions in groups.items():
            token = next((s.token for s in sessions if s.token), None)
            if token is None:
                continue
            try:
                data = await self.source.fetch(user_id, token)
            except Exception as exc:
                log.debug("degraded_refetch_failed", user_id=user_id, error=type(exc).__name__)
                continue
            if data.degraded:
                continue
            for session in sessions:
                if not (session.authenticated and session.degraded):
                    continue
                session.degraded = False
                session.user = data.user
                await self.hub.set_teams(session, data.team_ids)
                await self.hub.send(
                    session, "data_refreshed", {"teams": data.teams, "tasks": data.tasks}
                )
            log.info("degraded_data_refreshed", user_id=user_id, sockets=len(sessions))

    def _retry_after(self) -> int:
        return self._jitter.randint(*SHUTDOWN_RETRY_MS)

    async def announce_shutdown(self) -> int:
        """Refuse new sockets and tell every open one `server_shutdown {retryAfter}`."""
        self.shutting_down = True
        told = 0
        for session in self.hub.sessions:
            if not session.closed:
                await self.hub.send(session, "server_shutdown", {"retryAfter": self._retry_after()})
                told += 1
        return told
