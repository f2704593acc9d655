"""Issue and verify JWTs. The algorithm is pinned by settings, never read from a token.

Access tokens: `sub` (user id), `type: "access"`, `iat`, `exp`, `jti`, `fam`
(the family id of the login they come from, when they come from one), and
`iss`/`aud` when configured. Refresh tokens: the same with `type: "refresh"`
and `fam` always. `iat` carries milliseconds, so a
token minted in the same second as a "logout everywhere" is told apart.

Each token is verified once, where it enters (a REST request's dependency, a
socket's handshake or `authenticate`), and the `Claims` are what is passed on.
Revocation is not a property of the token and is checked where the claims
are used. With the PyJWT accel module (`huddle.accel.pyjwt`) verification
runs the same checks faster.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from huddle import accel
from huddle.config import Settings
from huddle.errors import (
    AuthError,
    RefreshTokenExpired,
    RefreshTokenInvalid,
    TokenExpired,
    TokenInvalid,
)

MAX_USER_ID = 2**31 - 1
"""User ids are 1..MAX_USER_ID (INTEGER on PostgreSQL)."""

VERIFIED_CACHE_SIZE = 1024
"""Access tokens whose verification is remembered (`TokenService.verify_access`)."""


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims the rest of Huddle uses."""

    user_id: int
    issued_at: float
    expires_at: float
    jti: str
    family_id: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: Claims


class TokenService:
    """Mints and verifies access and refresh tokens with the configured key and algorithm."""

    def __init__(self, settings: Settings, *, can_sign: bool = True) -> None:
        self._settings = settings
        self._algorithm = settings.jwt_algorithm
        self._verify_key = settings.verification_key()
        self._sign_key = settings.signing_key() if can_sign else None
        self._leeway = settings.jwt_leeway
        self._decode: Callable[..., dict[str, Any]] = jwt.decode
        if accel.load(settings.accel).pyjwt:
            from huddle.accel import pyjwt

            self._decode = pyjwt.decoder(self._algorithm, self._verify_key)
        # token -> (claims, exp): access tokens verified recently (see verify_access).
        self._verified: dict[str, tuple[Claims, int]] = {}

    @property
    def access_ttl(self) -> int:
        return self._settings.jwt_access_ttl

    def issue_access(
        self, user_id: int, *, ttl: int | None = None, family_id: str | None = None
    ) -> IssuedToken:
        """An access token; `family_id`: the refresh family it was issued with (its `fam`)."""
        return self._issue(user_id, "access", ttl or self._settings.jwt_access_ttl, family_id)

    def issue_refresh(self, user_id: int, family_id: str) -> IssuedToken:
        return self._issue(user_id, "refresh", self._settings.jwt_refresh_ttl, family_id)

    def verify_access(self, token: str) -> Claims:
        """Verified access-token claims; raises TokenExpired or TokenInvalid.

        A client sends the same access token with every request for its whole
        lifetime, so the last `VERIFIED_CACHE_SIZE` verified ones are remembered
        (the oldest forgotten first). A token seen again is the same bytes whose
        signature and claims already passed; of those checks only expiry can
        change its answer as time passes (`iat` and `nbf` only pass later, never
        earlier), so it alone is checked again, as PyJWT checks it: expired once
        `exp <= now - leeway`. Revocation is not the token's and is checked by the
        caller every time.
        """
        if type(token) is str:
            known = self._verified.get(token)
            if known is not None:
                claims, exp = known
                if exp > time.time() - self._leeway:
                    return claims
                del self._verified[token]
                raise TokenExpired()
        claims, exp = self._verify(token, "access", TokenExpired, TokenInvalid)
        verified = self._verified
        if len(verified) >= VERIFIED_CACHE_SIZE:
            del verified[next(iter(verified))]
        verified[token] = (claims, exp)
        return claims

    def verify_refresh(self, token: str) -> Claims:
        """Verified refresh-token claims; raises RefreshTokenExpired or RefreshTokenInvalid."""
        return self._verify(token, "refresh", RefreshTokenExpired, RefreshTokenInvalid)[0]

    def _issue(self, user_id: int, kind: str, ttl: int, family_id: str | None) -> IssuedToken:
        if self._sign_key is None:
            raise RuntimeError("this process holds no signing key")
        now = math.floor(time.time() * 1000) / 1000  # never in the future
        payload: dict[str, Any] = {
            "sub": str(user_id),
            "type": kind,
            "iat": now,
            "exp": int(now) + ttl,
            "jti": uuid.uuid4().hex,
        }
        if family_id is not None:
            payload["fam"] = family_id
        if self._settings.jwt_issuer:
            payload["iss"] = self._settings.jwt_issuer
        if self._settings.jwt_audience:
            payload["aud"] = self._settings.jwt_audience
        token = jwt.encode(payload, self._sign_key, algorithm=self._algorithm)
        claims = Claims(user_id, now, payload["exp"], payload["jti"], family_id)
        return IssuedToken(token, claims)

    def _verify(
        self,
        token: str,
        kind: str,
        expired: type[AuthError],
        invalid: type[AuthError],
    ) -> tuple[Claims, int]:
        """The claims, and `exp` as PyJWT compares it (an int)."""
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise invalid()
        try:
            payload = self._decode(
                token,
                self._verify_key,
                algorithms=[self._algorithm],
                leeway=self._settings.jwt_leeway,
                issuer=self._settings.jwt_issuer,
                audience=self._settings.jwt_audience,
                options={
                    "require": ["sub", "exp", "iat", "type"],
                    "verify_aud": self._settings.jwt_audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise expired() from None
        except jwt.PyJWTError:
            raise invalid() from None
        if payload.get("type") != kind:
            raise invalid()
        try:
            user_id = int(payload["sub"])
            issued_at = float(payload["iat"])
            expires_at = float(payload["exp"])
            exp = int(payload["exp"])  # PyJWT checked that this works
        except (TypeError, ValueError, OverflowError):
            raise invalid() from None
        if not 1 <= user_id <= MAX_USER_ID:  # no such user; the database takes no larger ids
            raise invalid()
        family = payload.get("fam")
        if (kind == "refresh" or family is not None) and not isinstance(family, str):
            raise invalid()
        jti = payload.get("jti")
        claims = Claims(user_id, issued_at, expires_at, jti if isinstance(jti, str) else "", family)
        return claims, exp
