"""The one revocation registry of a process: which access tokens stop working before `exp`.

Two kinds of revocation (SPEC §3, §4.1):

- a **user** at a time: "logout everywhere" and a password change refuse every
  token of the user issued before that instant (`users.sessions_revoked_at`);
- a **family**: a logout, or the reuse of a spent refresh token, revokes every
  token descended from one login — refresh tokens in the database, and the
  access tokens of that family (they carry its id as `fam`) here, at once.

An entry is kept for the access-token lifetime plus the leeway: by then every
token it could refuse has expired anyway. The registry is filled three ways:

1. at API / `huddle serve` start, from the database (`services/auth.py`
   `load_revocations`: recent `sessions_revoked_at` and recently revoked
   refresh-token families), so a restarted process still refuses them; this
   module itself needs no database, so the stand-alone gateway imports none;
2. at once in the process that revokes (`AuthService`);
3. in every other process through the event bus: the control messages
   `sessions_revoked {userId, revokedAt}` and `family_revoked {userId,
   familyId, revokedAt}` (`handle` is the bus subscriber; the gateway's relay
   feeds its own copy the same way, and disconnects the sockets concerned).

REST authentication (`AuthService`) and the gateway (`gateway/auth.py`) both
consult `revoked(claims)`; checking is two dictionary look-ups, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from huddle.config import Settings
from huddle.events.envelope import FAMILY_REVOKED, SESSIONS_REVOKED, Envelope
from huddle.logging import get_logger
from huddle.security.tokens import Claims

log = get_logger("huddle.revocation")

SWEEP_INTERVAL = 30.0
"""Seconds between sweeps of expired entries (done on insertion, no background task)."""


class Revocations:
    """Revoked users (since when) and revoked families, for one process."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.memory = float(settings.jwt_access_ttl + settings.jwt_leeway)
        self._clock = clock
        self._users: dict[int, float] = {}  # user id -> revoked at (epoch seconds)
        self._families: dict[str, tuple[int, float]] = {}  # family -> (user id, revoked at)
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._users) + len(self._families)

    def revoked(self, claims: Claims) -> bool:
        """True when the token these claims come from was revoked."""
        at = self._users.get(claims.user_id)
        if at is not None and claims.issued_at < at:
            return True
        return claims.family_id is not None and claims.family_id in self._families

    def user_revoked_at(self, user_id: int) -> float | None:
        return self._users.get(user_id)

    def family_revoked(self, family_id: str) -> bool:
        return family_id in self._families

    def revoke_user(self, user_id: int, at: float) -> None:
        """Every token of the user issued before `at` is revoked."""
        if at <= self._clock() - self.memory:
            return  # every such token has expired already
        self._users[user_id] = max(at, self._users.get(user_id, 0.0))
        self._sweep()

    def revoke_family(self, family_id: str, user_id: int, at: float) -> None:
        """Every token of the family is revoked."""
        if at <= self._clock() - self.memory:
            return
        known = self._families.get(family_id)
        self._families[family_id] = (user_id, at if known is None else max(at, known[1]))
        self._sweep()

    def apply(self, event: Envelope) -> bool:
        """Apply a `sessions_revoked` or `family_revoked` control message; True if it was one."""
        payload = event.payload
        try:
            if event.type == SESSIONS_REVOKED:
                self.revoke_user(int(payload["userId"]), float(payload["revokedAt"]))
                return True
            if event.type == FAMILY_REVOKED:
                family = payload["familyId"]
                if not isinstance(family, str):
                    raise TypeError("familyId")
                self.revoke_family(family, int(payload["userId"]), float(payload["revokedAt"]))
                return True
        except (KeyError, TypeError, ValueError):
            log.warning("control_message_malformed", type=event.type)
        return False

    async def handle(self, event: Envelope) -> None:
        """The bus subscriber."""
        if event.id is None:
            self.apply(event)

    def _sweep(self) -> None:
        now = self._clock()
        if now - self._swept < SWEEP_INTERVAL:
            return
        self._swept = now
        horizon = now - self.memory
        self._users = {user: at for user, at in self._users.items() if at > horizon}
        self._families = {
            family: entry for family, entry in self._families.items() if entry[1] > horizon
        }


def user_revoked_message(user_id: int, at: float) -> Envelope:
    """The control message that tells every process a user's sessions were revoked."""
    return Envelope(
        type=SESSIONS_REVOKED,
        payload={"userId": user_id, "revokedAt": at},
        subject_user_id=user_id,
    )


def family_revoked_message(family_id: str, user_id: int, at: float) -> Envelope:
    """The control message that tells every process a refresh family was revoked."""
    return Envelope(
        type=FAMILY_REVOKED,
        payload={"userId": user_id, "familyId": family_id, "revokedAt": at},
        subject_user_id=user_id,
    )
