"""Registration, login, refresh-token rotation with reuse detection, logout.

Refresh tokens rotate: each is redeemed once, by an UPDATE that only succeeds
while the row is unused and unrevoked, so two concurrent redemptions cannot
both win. A token presented again after use revokes its whole family, unless
it comes within REFRESH_REUSE_GRACE seconds of its own rotation (SPEC §3):
two tabs that refresh at the same moment both stay signed in, each with a
pair of the same family.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from huddle.clock import utcnow
from huddle.db.models import RefreshToken, User
from huddle.errors import (
    EmailTaken,
    InvalidCredentials,
    RefreshTokenExpired,
    RefreshTokenInvalid,
    RefreshTokenReused,
    TokenInvalid,
    TokenRevoked,
)
from huddle.logging import get_logger
from huddle.security.passwords import Passwords
from huddle.security.revocation import (
    Revocations,
    family_revoked_message,
    user_revoked_message,
)
from huddle.security.tokens import Claims, TokenService
from huddle.services.unit import Database
from huddle.services.users import Account, UserService

log = get_logger("huddle.auth")

USER_CACHE_TTL = 30.0  # seconds; revocation drops an entry at once (see `forget`)
USER_CACHE_SIZE = 10_000


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class Session:
    """A freshly issued token pair."""

    access_token: str
    refresh_token: str
    expires_in: int
    access_claims: Claims


class AuthService:
    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        passwords: Passwords,
        *,
        revocations: Revocations,
        reuse_grace: float = 10.0,
    ) -> None:
        self._db = db
        self._users_service = UserService(db)
        self._tokens = tokens
        self._passwords = passwords
        self._revocations = revocations
        self._reuse_grace = reuse_grace
        # user id -> (loaded at, row). Every authenticated request needs the user's
        # row (active? sessions revoked?); a short-lived copy saves a database round
        # trip per request. Revocation drops the entry here at once and on every
        # other instance when the bus delivers `sessions_revoked` (see `forget`).
        self._users: dict[int, tuple[float, Account]] = {}

    def forget(self, user_id: int) -> None:
        """Drop the cached row of a user (their sessions were revoked)."""
        self._users.pop(user_id, None)

    def _cached_user(self, user_id: int) -> Account | None:
        entry = self._users.get(user_id)
        if entry is None or time.monotonic() - entry[0] > USER_CACHE_TTL:
            return None
        return entry[1]

    def _remember(self, user: Account) -> None:
        if len(self._users) >= USER_CACHE_SIZE:
            self._users.pop(next(iter(self._users)))
        self._users[user.id] = (time.monotonic(), user)

    async def register(
        self, email: str, password: str, name: str, *, is_admin: bool = False
    ) -> User:
        hashed = await self._passwords.hash(password)
        email = normalize_email(email)
        try:
            async with self._db.unit() as unit:
                taken = await unit.session.scalar(select(User.id).where(User.email == email))
                if taken is not None:
                    raise EmailTaken()
                user = User(email=email, name=name, password_hash=hashed, is_admin=is_admin)
                unit.session.add(user)
                await unit.session.flush()
        except IntegrityError:  # lost a race with the same email
            raise EmailTaken() from None
        log.info("user_registered", user_id=user.id)
        return user

    async def login(self, email: str, password: str) -> Session:
        """A new token pair, in a new refresh family."""
        async with self._db.read() as session:
            user = await session.scalar(select(User).where(User.email == normalize_email(email)))
        ok = await self._passwords.verify(password, user.password_hash if user else None)
        if user is None or not ok or not user.is_active:
            raise InvalidCredentials()
        async with self._db.unit() as unit:
            issued = await self._issue(unit.session, user.id, str(uuid.uuid4()), None)
        log.info("user_logged_in", user_id=user.id)
        return issued

    async def refresh(self, refresh_token: str) -> Session:
        """Redeem a refresh token once for a new pair in the same family.

        Presented again within the reuse grace of its rotation, the token gets
        another pair of the family (the other tab's); after it, the family is
        revoked and REFRESH_TOKEN_REUSED raised. The losing UPDATE of a
        concurrent redemption waits for the winner's row lock (PostgreSQL) or
        the write lock (SQLite), so it always sees the winner's `used_at`.
        """
        claims = self._tokens.verify_refresh(refresh_token)
        now = utcnow()
        async with self._db.unit() as unit:
            row = await unit.session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == _digest(refresh_token))
            )
            if row is None or row.user_id != claims.user_id or row.family_id != claims.family_id:
                raise RefreshTokenInvalid()
            redeemed = await unit.session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.id == row.id,
                    RefreshToken.used_at.is_(None),
                    RefreshToken.revoked_at.is_(None),
                )
                .values(used_at=now)
            )
            reused = False
            if getattr(redeemed, "rowcount", 0) != 1:
                # Locked until this transaction ends: a concurrent revocation of the
                # family waits for the grace pair to be written, or wins first.
                row = await unit.session.scalar(
                    select(RefreshToken)
                    .where(RefreshToken.id == row.id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
                if row is None or row.used_at is None:
                    raise RefreshTokenInvalid()  # revoked, never used
                reused = not self._within_grace(row, now)
                if not reused:
                    log.info("refresh_token_grace", user_id=row.user_id, family=row.family_id)
            if not reused:
                if _aware(row.expires_at) <= now:
                    raise RefreshTokenExpired()
                user = await unit.session.get(User, row.user_id)
                if user is None or not user.is_active:
                    raise RefreshTokenInvalid()
                if _revoked(user, claims.issued_at):
                    raise RefreshTokenInvalid()
                issued = await self._issue(unit.session, row.user_id, row.family_id, row.id)
        if reused:
            await self._revoke_family(row.family_id, row.user_id)
            log.warning("refresh_token_reused", user_id=row.user_id, family=row.family_id)
            raise RefreshTokenReused()
        return issued

    def _within_grace(self, row: RefreshToken, now: datetime) -> bool:
        """A used, unrevoked token presented again less than the grace after its rotation."""
        if row.revoked_at is not None or row.used_at is None:
            return False
        return (now - _aware(row.used_at)).total_seconds() < self._reuse_grace

    async def logout(self, refresh_token: str) -> None:
        """Revoke the family of this refresh token (idempotent for a known token)."""
        claims = self._tokens.verify_refresh(refresh_token)
        if claims.family_id is None:
            raise RefreshTokenInvalid()
        await self._revoke_family(claims.family_id, claims.user_id)

    async def logout_all(self, user_id: int) -> None:
        """Revoke every session of the user: all families, and every earlier access token."""
        # Millisecond precision, like `iat`: a token minted in the same millisecond
        # as the revocation counts as minted after it.
        now = utcnow()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        async with self._db.unit() as unit:
            await unit.session.execute(
                update(User).where(User.id == user_id).values(sessions_revoked_at=now)
            )
            await unit.session.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        self.forget(user_id)
        self._revocations.revoke_user(user_id, now.timestamp())
        # Not a team event: tells every other process, and every gateway, at once.
        await self._db.bus.publish([user_revoked_message(user_id, now.timestamp())])
        log.info("sessions_revoked", user_id=user_id)

    async def change_password(self, user_id: int, current: str, new: str) -> None:
        async with self._db.read() as session:
            user = await session.get(User, user_id)
        if user is None or not await self._passwords.verify(current, user.password_hash):
            raise InvalidCredentials()
        hashed = await self._passwords.hash(new)
        async with self._db.unit() as unit:
            await unit.session.execute(
                update(User).where(User.id == user_id).values(password_hash=hashed)
            )
        await self.logout_all(user_id)

    async def authenticate(self, access_token: str) -> Account:
        """The active user an access token belongs to; TOKEN_* errors otherwise."""
        claims = self._tokens.verify_access(access_token)
        return await self.user_for_claims(claims)

    def cached_user_for_claims(self, claims: Claims) -> Account | None:
        """`user_for_claims` without I/O: None when the user's row is not cached.

        Raises as `user_for_claims` does for a cached row.
        """
        user = self._cached_user(claims.user_id)
        return None if user is None else self._admissible(user, claims)

    def admit(self, user: Account | None, claims: Claims) -> Account:
        """A user row read elsewhere (`UserService.bootstrap`): remembered like one read
        here, and admitted or refused as `user_for_claims` would."""
        if user is not None:
            self._remember(user)
        return self._admissible(user, claims)

    async def user_for_claims(self, claims: Claims) -> Account:
        user = self._cached_user(claims.user_id)
        if user is None:
            user = await self._users_service.account(claims.user_id)
            if user is not None:
                self._remember(user)
        return self._admissible(user, claims)

    def _admissible(self, user: Account | None, claims: Claims) -> Account:
        """The user a token's claims stand for, or TOKEN_INVALID / TOKEN_REVOKED."""
        admitted = _admissible(user, claims)
        if self._revocations.revoked(claims):  # its family, or (from the bus) its user
            raise TokenRevoked()
        return admitted

    async def _revoke_family(self, family_id: str, user_id: int) -> None:
        """Revoke a family's refresh tokens, and its access tokens here and everywhere, now."""
        now = utcnow()
        async with self._db.unit() as unit:
            await unit.session.execute(
                update(RefreshToken)
                .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=func.coalesce(RefreshToken.revoked_at, now))
            )
        self._revocations.revoke_family(family_id, user_id, now.timestamp())
        await self._db.bus.publish([family_revoked_message(family_id, user_id, now.timestamp())])
        log.info("family_revoked", user_id=user_id, family=family_id)

    async def _issue(
        self, session: AsyncSession, user_id: int, family: str, parent: int | None
    ) -> Session:
        access = self._tokens.issue_access(user_id, family_id=family)
        refresh = self._tokens.issue_refresh(user_id, family)
        session.add(
            RefreshToken(
                token_hash=_digest(refresh.token),
                family_id=family,
                parent_id=parent,
                user_id=user_id,
                issued_at=datetime.fromtimestamp(refresh.claims.issued_at, UTC),
                expires_at=datetime.fromtimestamp(refresh.claims.expires_at, UTC),
            )
        )
        return Session(access.token, refresh.token, self._tokens.access_ttl, access.claims)


async def load_revocations(revocations: Revocations, db: Database) -> int:
    """Fill `revocations` with what the database says was revoked within its memory
    (users' `sessions_revoked_at`, revoked refresh families); returns how many."""
    since = datetime.fromtimestamp(time.time() - revocations.memory, UTC)
    async with db.read() as session:
        users = (
            await session.execute(
                select(User.id, User.sessions_revoked_at).where(User.sessions_revoked_at > since)
            )
        ).all()
        families = (
            await session.execute(
                select(
                    RefreshToken.family_id, RefreshToken.user_id, func.max(RefreshToken.revoked_at)
                )
                .where(RefreshToken.revoked_at > since)
                .group_by(RefreshToken.family_id, RefreshToken.user_id)
            )
        ).all()
    for user_id, at in users:
        if at is not None:
            revocations.revoke_user(user_id, _aware(at).timestamp())
    for family_id, user_id, at in families:
        if at is not None:
            revocations.revoke_family(family_id, user_id, _aware(at).timestamp())
    return len(users) + len(families)


def _admissible(user: Account | None, claims: Claims) -> Account:
    """The user a token's claims stand for, or TOKEN_INVALID / TOKEN_REVOKED."""
    if user is None or not user.is_active:
        raise TokenInvalid()
    if _revoked(user, claims.issued_at):
        raise TokenRevoked()
    return user


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _revoked(user: Account | User, issued_at: float) -> bool:
    revoked = user.sessions_revoked_at
    return revoked is not None and issued_at < _aware(revoked).timestamp()
