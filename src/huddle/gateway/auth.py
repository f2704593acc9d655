"""Authentication of one socket: verify, admit, fetch, join, replay; expiry, grace, revocation.

The flows of SPEC §4.1-4.2, shared by the handshake and the `authenticate`
and `refresh_token` events. Each runs with the session's lock held, so a
socket's state changes one flow at a time; timers re-take the lock and check
that what they were set for still holds (a refresh replaces the expiry).

A failure the client must act on is sent as `authentication_error` here and
raised as `Reported`, so the caller only has to answer the acknowledgement.
Terminal codes then disconnect the socket; TOKEN_EXPIRED opens AUTH_GRACE.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from huddle.clock import iso, utcnow
from huddle.config import Settings
from huddle.errors import (
    AuthError,
    ConnectionLimit,
    HuddleError,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenRevoked,
)
from huddle.gateway.deadlines import Deadlines
from huddle.gateway.payloads import RefreshRequest
from huddle.gateway.realtime.hub import Hub
from huddle.gateway.realtime.relay import EventRelay
from huddle.gateway.replay import synchronize
from huddle.gateway.session import SocketSession, State
from huddle.gateway.sources.base import UserDataSource
from huddle.logging import get_logger, log_enabled
from huddle.security.revocation import Revocations
from huddle.security.tokens import Claims, TokenService

log = get_logger("huddle.gateway.auth")


class Reported(Exception):
    """An error the client was already told about with `authentication_error`."""

    def __init__(self, error: HuddleError) -> None:
        super().__init__(error.code)
        self.error = error


class Authenticator:
    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        *,
        tokens: TokenService,
        source: UserDataSource,
        relay: EventRelay,
        revocations: Revocations | None = None,
    ) -> None:
        self._hub = hub
        self._settings = settings
        self._tokens = tokens
        self._source = source
        self._relay = relay
        # Revoked users and families: the Runtime's under `huddle serve` (shared with
        # REST), this gateway's own, fed by the bus, under `huddle gateway`.
        self._revocations = revocations if revocations is not None else Revocations(settings)
        self.deadlines = Deadlines(self._deadline)

    def await_token(self, session: SocketSession, last_event_id: int | None) -> None:
        """A socket without a token: AUTH_TIMEOUT to send one (`authenticate`)."""
        session.missed_after = last_event_id
        session.schedule(
            "auth_timeout",
            self._settings.auth_timeout,
            lambda: self._hub.spawn(self._auth_timeout(session), "auth-timeout"),
        )

    def verify(self, token: str) -> Claims | AuthError:
        """Verify a token where it enters (handshake, `authenticate`, `refresh_token`):
        its claims, or the refusal, which is what gets passed on from then on."""
        try:
            return self._tokens.verify_access(token)
        except AuthError as exc:
            return exc

    async def authenticate(
        self,
        session: SocketSession,
        token: str,
        verified: Claims | AuthError,
        *,
        replay_after: int | None,
    ) -> dict[str, Any]:
        """Admit a verified token: fetch the user's data, join the rooms, emit
        `authenticated`, replay.

        Call with `session.lock` held. `verified` is what `verify(token)`
        answered. Raises `Reported` when the client was sent an
        `authentication_error` instead.
        """
        hub = self._hub
        if isinstance(verified, TokenExpired):
            await self._token_expired(session, replay_after)
        if isinstance(verified, AuthError):
            await self.fail(session, verified)
        claims = verified
        await self._check_admissible(session, claims)
        same_user = session.user_id == claims.user_id
        # A lastEventId given before the user was known (handshake) or before
        # the token expired is where this socket's replay starts.
        if replay_after is None and (same_user or session.user_id is None):
            replay_after = session.missed_after
        # From here until the sync ends, live events are held for this socket.
        hub.sessions.mark_syncing(session)
        try:
            return await self._admit(session, claims, token, replay_after, same_user=same_user)
        finally:
            hub.sessions.unmark_syncing(session)  # (already done when the sync completed)

    async def _admit(
        self,
        session: SocketSession,
        claims: Claims,
        token: str,
        replay_after: int | None,
        *,
        same_user: bool,
    ) -> dict[str, Any]:
        hub = self._hub
        head = self._relay.head
        try:
            data = await self._source.fetch(claims, token)
        except TokenExpired:
            await self._token_expired(session, replay_after)
        except AuthError as exc:
            await self.fail(session, exc)
        if session.closed:  # revoked or gone while fetching
            raise Reported(TokenRevoked())
        # The data can reflect events this gateway's relay has not handled yet (an API
        # that committed and published just before the read, the bus a little behind):
        # start from the newest event the data reflects, so those are not sent again.
        if data.head is not None and data.head > (head or 0):
            head = data.head
        await self._check_admissible(session, claims)
        if not same_user:
            await hub.leave_all(session)
        hub.sessions.bind(session, claims.user_id)
        session.token = token
        session.claims = claims
        session.issued_at = claims.issued_at
        session.family_id = claims.family_id
        session.expires_at = claims.expires_at
        session.user = data.user
        session.degraded = data.degraded
        hub.set_state(session, State.AUTHENTICATED)
        session.cancel("auth_timeout", "grace")
        session.missed_after = None
        body = {
            "success": True,
            "user": data.user,
            "teams": data.teams,
            "tasks": data.tasks,
            "timestamp": iso(utcnow()),
            "expiresAt": iso(claims.expires_at),
            "lastEventId": head or 0,
            "degraded": data.degraded,
        }
        await hub.send(session, "authenticated", body)
        if log_enabled(logging.INFO):
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
        try:
            await synchronize(
                hub, self._relay, self._source, session, head=head, replay_after=replay_after
            )
        except AuthError as exc:  # the backend refused the token for the replay
            await self.fail(session, exc)
        return body

    async def _check_admissible(self, session: SocketSession, claims: Claims) -> None:
        """Revoked tokens and the per-user socket limit, checked without I/O."""
        if self._revocations.revoked(claims):
            await self.fail(session, TokenRevoked())
        limit = self._settings.max_connections_per_user
        if self._hub.sessions.authenticated_count(claims.user_id, besides=session) >= limit:
            await self.fail(session, ConnectionLimit())

    async def fail(self, session: SocketSession, error: HuddleError) -> NoReturn:
        await self._hub.reject(session, error)
        raise Reported(error)

    async def _token_expired(self, session: SocketSession, last_event_id: int | None) -> NoReturn:
        """An expired token was presented. A live socket keeps the token it has
        (it is only told); any other socket enters its grace period."""
        if session.authenticated:
            await self._hub.report(session, TokenExpired())
        else:
            await self.expire(session, last_event_id)
        raise Reported(TokenExpired())

    async def expire(self, session: SocketSession, last_event_id: int | None = None) -> None:
        """TOKEN_EXPIRED: out of every room, told to refresh, AUTH_GRACE to do it."""
        hub = self._hub
        if session.state is State.AUTHENTICATED:
            session.missed_after = self._relay.head
            await hub.leave_all(session)
        elif session.missed_after is None:
            session.missed_after = last_event_id
        if session.state is not State.EXPIRED:
            hub.set_state(session, State.EXPIRED)
            session.cancel("auth_timeout")
            session.clear_deadline()
            session.schedule(
                "grace",
                self._settings.auth_grace,
                lambda: hub.spawn(self._grace_over(session), "auth-grace"),
            )
        await hub.report(session, TokenExpired())

    def _schedule_expiry(self, session: SocketSession) -> None:
        """The token's first deadline: its warning (TOKEN_EXPIRY_WARNING before it
        expires), or its expiry when warnings are off (`_deadline` goes on)."""
        expires_at = session.expires_at
        warning = self._settings.token_expiry_warning
        if warning > 0:
            session.set_deadline(self.deadlines, expires_at - warning)
        else:
            session.set_deadline(self.deadlines, expires_at + self._settings.jwt_leeway)

    def _deadline(self, session: SocketSession) -> None:
        """A token deadline came (`Deadlines`): the warning, which sets the expiry
        next — one deadline per socket at a time — or the expiry itself."""
        if not session.authenticated:
            return
        expires_at = session.expires_at
        expire_at = expires_at + self._settings.jwt_leeway
        if session.deadline < expire_at:
            session.set_deadline(self.deadlines, expire_at)
            self._hub.spawn(self._warn(session, expires_at), "expiry-warning")
        else:
            self._hub.spawn(self._expired(session, expires_at), "expiry")

    async def _warn(self, session: SocketSession, expires_at: float) -> None:
        if session.authenticated and session.expires_at == expires_at:
            await self._hub.send(session, "token_expiring", {"expiresAt": iso(expires_at)})

    async def _expired(self, session: SocketSession, expires_at: float) -> None:
        async with session.lock:
            if session.authenticated and session.expires_at == expires_at:
                log.info("socket_token_expired", sid=session.sid, user_id=session.user_id)
                await self.expire(session)

    async def _auth_timeout(self, session: SocketSession) -> None:
        async with session.lock:
            if session.state is State.PENDING:
                await self._hub.reject(
                    session, TokenMissing("No access token was received in time. Please log in.")
                )

    async def _grace_over(self, session: SocketSession) -> None:
        async with session.lock:
            if session.state is State.EXPIRED:
                log.info("socket_grace_over", sid=session.sid, user_id=session.user_id)
                await self._hub.terminate(session)

    async def on_sessions_revoked(self, user_id: int, revoked_at: float) -> None:
        """A user logged out everywhere: their sockets holding older tokens go, now."""
        self._revocations.revoke_user(user_id, revoked_at)
        for session in self._hub.sessions.of_user(user_id):
            if not session.closed and session.issued_at < revoked_at:
                await self._hub.reject(session, TokenRevoked())

    async def on_family_revoked(self, user_id: int, family_id: str, revoked_at: float) -> None:
        """A login was logged out, or its refresh token reused: its sockets go, now."""
        self._revocations.revoke_family(family_id, user_id, revoked_at)
        for session in self._hub.sessions.of_user(user_id):
            if not session.closed and session.family_id == family_id:
                await self._hub.reject(session, TokenRevoked())

    async def refresh(self, session: SocketSession, request: RefreshRequest) -> dict[str, Any]:
        """`refresh_token`: rotate (or take the renewed access token), then authenticate again.

        Call with `session.lock` held. Emits `token_refreshed` before the fresh
        `authenticated` and the replay of what the socket missed while expired.
        """
        refresh_token: str | None = None
        expires_in: int | None = None
        if request.kind == "refresh":
            # A reuse revokes this socket's own family while it rotates: it is told
            # REFRESH_TOKEN_REUSED below, not TOKEN_REVOKED by `on_family_revoked`.
            session.family_id = None
            try:
                rotated = await self._source.rotate(request.value)
            except AuthError as exc:
                await self.fail(session, exc)
            access_token = rotated.access_token
            refresh_token = rotated.refresh_token
            expires_in = rotated.expires_in
        else:
            access_token = request.value
        verified = self.verify(access_token)
        if isinstance(verified, TokenExpired):
            await self._token_expired(session, None)
        if isinstance(verified, AuthError):
            await self.fail(session, verified)
        claims = verified
        if session.user_id is not None and claims.user_id != session.user_id:
            await self.fail(session, TokenInvalid("The new token belongs to another user."))
        if expires_in is None:
            expires_in = max(0, int(claims.expires_at - time.time()))
        refreshed = {
            "accessToken": access_token,
            "refreshToken": refresh_token,
            "expiresIn": expires_in,
            "expiresAt": iso(claims.expires_at),
        }
        await self._hub.send(session, "token_refreshed", refreshed)
        log.info("socket_token_refreshed", sid=session.sid, user_id=claims.user_id)
        await self.authenticate(session, access_token, claims, replay_after=None)
        return refreshed
