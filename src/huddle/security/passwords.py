"""Argon2id password hashing (pwdlib), off the event loop."""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher


class Passwords:
    """Hash and verify passwords. Hashing is CPU-bound, so it runs in a worker thread."""

    def __init__(self, *, fast: bool = False) -> None:
        # `fast` (APP_ENV=test only) keeps Argon2id but with small costs, so a test
        # suite can register hundreds of users; production uses pwdlib's defaults.
        hasher = (
            Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1) if fast else Argon2Hasher()
        )
        self._hash = PasswordHash((hasher,))
        # Verified when the email is unknown, so a login's timing does not tell
        # whether an account exists.
        self._dummy = self._hash.hash("dummy-password-for-timing")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True when `password` matches `hashed`; a None hash still costs one verification."""
        target = hashed if hashed is not None else self._dummy
        ok = await asyncio.to_thread(self._safe_verify, password, target)
        return ok and hashed is not None

    def _safe_verify(self, password: str, hashed: str) -> bool:
        try:
            return self._hash.verify(password, hashed)
        except Exception:  # a corrupt stored hash is a failed login, not a 500
            return False
