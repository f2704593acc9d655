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

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

from huddle.config import Settings
from huddle.errors import (
    AuthError,
    BadRequest,
    HuddleError,
    InternalError,
    NotFound,
    RateLimited,
    TokenExpired,
    TokenMissing,
)
from huddle.gateway import payloads
from huddle.gateway.admission import PendingSessions
from huddle.gateway.auth import Authenticator, Reported
from huddle.gateway.packets import MALFORMED_EVENT, MalformedPacket
from huddle.gateway.realtime.fanout import NAMESPACE
from huddle.gateway.realtime.hub import Hub
from huddle.gateway.realtime.relay import EventRelay
from huddle.gateway.replay import synchronize
from huddle.gateway.session import SocketSession, State
from huddle.gateway.sources.base import UserDataSource
from huddle.logging import get_logger, log_enabled
from huddle.metrics import CONNECTION_OUTCOMES, SOCKETS_OPEN
from huddle.security.client_ip import LoopbackProxyWarning, client_address, peer_ip
from huddle.security.ratelimit import ConnectionLimiter, SocketEventLimiter
from huddle.security.revocation import Revocations
from huddle.security.tokens import TokenService

log = get_logger("huddle.gateway")

Handler = Callable[[SocketSession, tuple[Any, ...]], Awaitable[Any]]

SHUTDOWN_RETRY_MS = (1000, 5000)
"""`server_shutdown.retryAfter` is drawn from this range, so clients spread their reconnects."""


class GatewayNamespace:
    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        *,
        tokens: TokenService,
        source: UserDataSource,
        limiter: ConnectionLimiter,
        revocations: Revocations | None = None,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.tokens = tokens
        self.source = source
        self.limiter = limiter
        self.relay = EventRelay(hub, source, self._sessions_revoked, self._family_revoked)
        self.auth = Authenticator(
            hub, settings, tokens=tokens, source=source, relay=self.relay, revocations=revocations
        )
        self.shutting_down = False
        self._sio: Any = None  # the server `register` wired this namespace into
        self._proxy_warning = LoopbackProxyWarning(settings)
        self.pending = PendingSessions(settings, limiter, self._end_engine_session)
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
        self._sio = sio
        self._guard_engine(sio.eio)

    def _guard_engine(self, eio: Any) -> None:
        """Put the pre-CONNECT rules and the malformed-packet answer around python-socketio's
        handlers of engine.io's events (engine.io's public `handlers` and `on`)."""
        on_open, on_message, on_close = (
            eio.handlers["connect"],
            eio.handlers["message"],
            eio.handlers["disconnect"],
        )

        async def opened(eio_sid: str, environ: dict[str, Any]) -> Any:
            scope = environ.get("asgi.scope") or {}
            address = client_address(scope, self.settings.trusted_networks)
            if not self.pending.opened(eio_sid, address):
                return False
            return await on_open(eio_sid, environ)

        async def message(eio_sid: str, data: Any) -> None:
            if self._sio.manager.sid_from_eio_sid(eio_sid, NAMESPACE) is None and not (
                isinstance(data, str) and data[:1] == "0"
            ):
                # Anything but a CONNECT before the Socket.IO session exists ends
                # the session, as Node's Socket.IO does ("invalid state").
                await self._end_engine_session(eio_sid)
                return
            try:
                await on_message(eio_sid, data)
            except ValueError as exc:
                reason = exc.reason if isinstance(exc, MalformedPacket) else "Malformed packet."
                await self.on_malformed(eio_sid, reason)

        async def closed(eio_sid: str, *args: Any) -> None:
            self.pending.closed(eio_sid)
            await on_close(eio_sid, *args)

        eio.on("connect", opened)
        eio.on("message", message)
        eio.on("disconnect", closed)

    async def _end_engine_session(self, eio_sid: str) -> None:
        if log_enabled(logging.DEBUG):
            log.debug("engine_session_ended_before_connect")
        self.pending.closed(eio_sid)
        await self._sio.eio.disconnect(eio_sid)

    # --- connection --------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        eio_sid = self._sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        if eio_sid is not None:
            self.pending.connected(eio_sid)
        scope = environ.get("asgi.scope") or {}
        address = client_address(scope, self.settings.trusted_networks)
        self._proxy_warning.observe(peer_ip(scope))
        ip, local = address.ip, address.localhost
        session = SocketSession(
            sid, ip, SocketEventLimiter(self.settings, localhost=local), localhost=local
        )
        self.hub.sessions.add(session)
        SOCKETS_OPEN.inc()
        # What `structlog.contextvars.bound_contextvars` does, without its context manager.
        bound = bind_contextvars(sid=sid, client_ip=ip)
        try:
            async with session.lock:
                await self._connect(session, environ, auth)
        except Reported:
            pass
        except Exception:
            log.exception("socket_connect_failed")
            await self.hub.send_error(session, InternalError())
            await self.hub.terminate(session)
        finally:
            reset_contextvars(**bound)
            _forget_request_headers(environ)

    async def _connect(self, session: SocketSession, environ: dict[str, Any], auth: Any) -> None:
        if self.shutting_down:
            CONNECTION_OUTCOMES["shutting_down"].inc()
            await self.hub.send(session, "server_shutdown", {"retryAfter": self._retry_after()})
            await self.hub.terminate(session)
            return
        handshake = payloads.handshake(auth, environ.get("HTTP_AUTHORIZATION"))
        if handshake.malformed:
            await self.hub.send_error(session, BadRequest(handshake.malformed))
        # Verify the token here, once (no I/O): an expired one is charged to its
        # own bucket, so a client coming back from sleep keeps its attempts; the
        # claims (or the refusal) are what `authenticate` works with.
        verified = None if handshake.token is None else self.auth.verify(handshake.token)
        try:
            decision = await self.limiter.check(
                session.client_ip,
                expired=isinstance(verified, TokenExpired),
                localhost=session.localhost,
            )
        except Exception as exc:  # the limiter must never refuse everyone
            log.warning("connection_limiter_failed", error=type(exc).__name__)
        else:
            if not decision.allowed:
                CONNECTION_OUTCOMES["rate_limited"].inc()
                await self.hub.reject(session, RateLimited(decision.retry_after_ms))
                return
        if handshake.token is None or verified is None:
            CONNECTION_OUTCOMES["awaiting_token"].inc()
            self.auth.await_token(session, handshake.last_event_id)
            return
        try:
            await self.auth.authenticate(
                session, handshake.token, verified, replay_after=handshake.last_event_id
            )
        except Reported as reported:
            outcome = "expired" if isinstance(reported.error, TokenExpired) else "rejected"
            CONNECTION_OUTCOMES[outcome].inc()
            return
        CONNECTION_OUTCOMES["authenticated"].inc()

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.hub.sessions.get(sid)
        if session is None:
            return
        try:
            if not session.closed:
                self.hub.set_state(session, State.CLOSED)
                session.cancel_all()
                self.hub.sessions.unmark_syncing(session)
                await self.hub.leave_all(session)  # presence: maybe the user's last socket
        finally:
            self.hub.sessions.remove(session)
            SOCKETS_OPEN.dec()
        if log_enabled(logging.DEBUG):
            log.debug("socket_disconnected", sid=sid, user_id=session.user_id, reason=str(reason))

    async def _sessions_revoked(self, user_id: int, revoked_at: float) -> None:
        await self.auth.on_sessions_revoked(user_id, revoked_at)

    async def _family_revoked(self, user_id: int, family_id: str, revoked_at: float) -> None:
        await self.auth.on_family_revoked(user_id, family_id, revoked_at)

    # --- client events -----------------------------------------------------

    def _client_event(self, name: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
        async def run(sid: str, *args: Any) -> Any:
            return await self._answer(sid, name, handler, args)

        run.__name__ = f"on_{name}"
        return run

    async def on_malformed(self, eio_sid: str, reason: str) -> None:
        """A packet the gateway will not read (`packets.py`): `error BAD_REQUEST` (SPEC §4.5).

        Answered like any event (so it counts against the socket's event rate,
        and a flood ends in a disconnect); a client with no Socket.IO session
        yet has nobody to answer, and its Engine.IO session is closed, as the
        Node server does on a parse error.
        """
        sid = self._sio.manager.sid_from_eio_sid(eio_sid, NAMESPACE)
        if sid is None or self.hub.sessions.get(sid) is None:
            await self._end_engine_session(eio_sid)
            return
        await self._answer(sid, "*", _refuse, (reason,))

    async def on_unknown(self, event: str, sid: str, *args: Any) -> Any:
        """Any event without a handler: a refused packet (`MALFORMED_EVENT`) or an unknown name."""
        if event == MALFORMED_EVENT:
            return await self._answer(sid, "*", _refuse, args[:1])
        return await self._answer(sid, "*", _refuse, ("Unknown event.",))

    async def _answer(
        self, sid: str, name: str, handler: Handler, args: tuple[Any, ...]
    ) -> dict[str, Any] | None:
        session = self.hub.sessions.get(sid)
        if session is None or session.closed:
            return None
        with structlog.contextvars.bound_contextvars(
            sid=sid, client_ip=session.client_ip, user_id=session.user_id
        ):
            try:
                return await self._run(session, name, handler, args)
            except Exception:
                log.exception("socket_handler_failed", client_event=name)
                error = InternalError()
                await self.hub.send_error(session, error)
                return payloads.failed(error)

    async def _run(
        self, session: SocketSession, name: str, handler: Handler, args: tuple[Any, ...]
    ) -> dict[str, Any]:
        decision = session.limiter.hit()
        if not decision.allowed:
            limited = RateLimited(decision.retry_after_ms, "Too many events. Slow down.")
            if session.limiter.flooding:
                log.warning("socket_flooding", client_event=name)
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
            verified = self.auth.verify(token)
            return await self.auth.authenticate(
                session, token, verified, replay_after=last_event_id
            )

    async def _on_refresh_token(self, session: SocketSession, args: tuple[Any, ...]) -> Any:
        request = payloads.refresh(args)
        async with session.lock:
            if session.closed:
                raise TokenMissing()
            return await self.auth.refresh(session, request)

    async def _on_team_presence(self, session: SocketSession, args: tuple[Any, ...]) -> Any:
        team_id = payloads.team_id(args, "team_presence")
        self._require_authenticated(session)
        if team_id not in session.team_ids:
            raise NotFound("Team not found.")
        return {"teamId": team_id, "online": await self.hub.presence.online(team_id)}

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
                await self.auth.fail(session, exc)
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
            holder = next((s for s in sessions if s.token and s.claims), None)
            if holder is None or holder.token is None or holder.claims is None:
                continue
            try:
                data = await self.source.fetch(holder.claims, holder.token)
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


async def _refuse(session: SocketSession, args: tuple[Any, ...]) -> Any:
    """The handler of a refused packet or an unknown event: BAD_REQUEST with the reason."""
    raise BadRequest(str(args[0]) if args else "Malformed packet.")


_KEPT_HEADERS = (b"authorization", b"x-forwarded-for")
"""What a second CONNECT on the same Engine.IO session reads again (`on_connect`)."""
_KEPT_ENVIRON = tuple("HTTP_" + h.decode().upper().replace("-", "_") for h in _KEPT_HEADERS)
"""The same headers as the environ names them."""


def _forget_request_headers(environ: dict[str, Any]) -> None:
    """Drop the handshake request's headers once the CONNECT is answered.

    python-socketio keeps each session's environ — and through it the ASGI
    scope — for the socket's life, hours for most; a browser's dozen headers
    are held twice there (as raw bytes in the scope and as `HTTP_*` strings),
    ~1 KB per connection that nothing reads again. What a client's second
    CONNECT on the same session would read (its token header, the forwarded
    address) stays.
    """
    for key in [key for key in environ if key.startswith("HTTP_")]:
        if key not in _KEPT_ENVIRON:
            del environ[key]
    scope = environ.get("asgi.scope")
    if isinstance(scope, dict):
        headers = scope.get("headers")
        if headers:
            scope["headers"] = [item for item in headers if item[0] in _KEPT_HEADERS]
