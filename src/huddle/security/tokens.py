"""Issue and verify JWTs. The algorithm is pinned by settings, never read from a token.

Access tokens: `sub` (user id), `type: "access"`, `iat`, `exp`, `jti`, `fam`
(the family id of the login they come from, when they come from one), and
`iss`/`aud` when configured. Refresh tokens: the same with `type: "refresh"`
and `fam` always. `iat` carries milliseconds, so a
token minted in the same second as a "logout everywhere" is told apart.

Verified access tokens are remembered (`ACCESS_MEMO_SIZE` of them, the
oldest forgotten first): one gateway handshake checks its token up to three
times (the rate limiter's expired-bucket pre-check, the authentication, the
user-data fetch), and a client reconnecting presents the same token again.
A remembered token skips the signature check and the decoding, never the
clock: its `exp` is compared with the time (and the leeway) on every call,
exactly as PyJWT does, so it is refused the moment it expires. Only
successful verifications of access tokens are remembered — never a refusal,
never a refresh token (redeeming one always goes through the database) —
and the memo belongs to one `TokenService`, i.e. to one key: a process with
a new key builds a new service. Revocation is not a property of the token
and is checked elsewhere on every use (`AuthService.user_for_claims`, the
`security/revocation.py`).
"""

from __future__ import annotations

import binascii
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm, get_default_algorithms
from jwt.utils import base64url_decode, base64url_encode

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

ACCESS_MEMO_SIZE = 4096
"""Verified access tokens remembered per `TokenService` (a few hundred bytes each)."""


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


class _PreparedHMAC(HMACAlgorithm):
    """PyJWT's HMAC, with the configured secret's checks done once.

    `HMACAlgorithm.prepare_key` re-examines the key on every verification
    (PEM, SSH, DER and JWK probes, two of them by way of exceptions): about
    half of what verifying an HS256 token costs. The configured key never
    changes, so its prepared form is kept; any other key goes the usual way.
    """

    def __init__(self, hash_alg: Any, key: str | bytes) -> None:
        super().__init__(hash_alg)
        self._key = key
        self._prepared = super().prepare_key(key)  # raises as PyJWT would, for a bad key

    def prepare_key(self, key: str | bytes) -> bytes:
        if key is self._key:
            return self._prepared
        return super().prepare_key(key)


_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class _SegmentJWS(jwt.PyJWS):
    """PyJWS whose segment check runs in C.

    PyJWT 2.15 checks each byte of each segment against the base64url alphabet
    with a Python generator (`any(c not in ALPHABET for c in segment)`): a
    third of what verifying an HS256 access token cost here (~21 of 62 µs per
    token, 5,000 tokens). This is the same check — the same padding rules,
    alphabet, and canonical-encoding test, the same `DecodeError`s — with
    `bytes.translate` finding stray bytes. Versions without the method never
    call it, and verify as they always did.
    """

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if padding > 2 or (padding and len(segment) % 4 != 0):
            raise jwt.DecodeError(f"Invalid {name} padding")
        if len(stripped) % 4 == 1 or stripped.translate(None, _BASE64URL):
            raise jwt.DecodeError(f"Invalid {name} padding")
        try:
            decoded = base64url_decode(stripped)
        except (TypeError, binascii.Error) as err:
            raise jwt.DecodeError(f"Invalid {name} padding") from err
        if base64url_encode(decoded) != stripped:
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


def _decoder(algorithm: str, key: str | bytes) -> Callable[..., dict[str, Any]]:
    """`decode` of a private `PyJWT`: `_SegmentJWS`, and `_PreparedHMAC` for an HMAC key."""
    default = get_default_algorithms().get(algorithm)
    decoder = jwt.PyJWT()
    jws = getattr(decoder, "_jws", None)  # PyJWT >= 2.10 gives each PyJWT its own PyJWS
    if not isinstance(jws, jwt.PyJWS):
        return jwt.decode
    jws = _SegmentJWS(options=jws.options)
    decoder._jws = jws
    if type(default) is not HMACAlgorithm:
        return decoder.decode
    try:
        prepared = _PreparedHMAC(default.hash_alg, key)
    except jwt.PyJWTError:
        return jwt.decode  # a key PyJWT refuses: let every verification say so, as before
    jws.unregister_algorithm(algorithm)
    jws.register_algorithm(algorithm, prepared)
    return decoder.decode


class TokenService:
    """Mints and verifies access and refresh tokens with the configured key and algorithm."""

    def __init__(
        self, settings: Settings, *, can_sign: bool = True, memo_size: int = ACCESS_MEMO_SIZE
    ) -> None:
        self._settings = settings
        self._algorithm = settings.jwt_algorithm
        self._verify_key = settings.verification_key()
        self._sign_key = settings.signing_key() if can_sign else None
        self._leeway = settings.jwt_leeway
        # token -> (claims, int(exp)); insertion order is age, the oldest goes first
        self._memo: dict[str, tuple[Claims, int]] = {}
        self._memo_size = memo_size
        self._decode = _decoder(self._algorithm, self._verify_key)

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
        """Verified access-token claims; raises TokenExpired or TokenInvalid."""
        memo = self._memo
        entry = memo.get(token) if type(token) is str else None
        if entry is not None:
            # PyJWT's own test: expired once `exp <= now - leeway`.
            if entry[1] > time.time() - self._leeway:
                return entry[0]
            memo.pop(token, None)
            raise TokenExpired()
        claims, exp = self._verify(token, "access", TokenExpired, TokenInvalid)
        if self._memo_size > 0:
            if len(memo) >= self._memo_size:
                memo.pop(next(iter(memo)), None)
            memo[token] = (claims, exp)
        return claims

    def forget_verified(self) -> None:
        """Forget every remembered access token (the next use of each verifies it in full)."""
        self._memo.clear()

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
