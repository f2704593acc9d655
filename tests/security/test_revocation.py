"""The revocation registry (security/revocation.py): what it refuses and for how long."""

from __future__ import annotations

from pathlib import Path

from huddle.config import Settings
from huddle.events.envelope import Envelope
from huddle.security.revocation import (
    SWEEP_INTERVAL,
    Revocations,
    family_revoked_message,
    user_revoked_message,
)
from huddle.security.tokens import Claims


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def registry(tmp_path: Path, clock: Clock) -> Revocations:
    settings = Settings(_env_file=None, huddle_data_dir=tmp_path, jwt_access_ttl=900, jwt_leeway=10)  # type: ignore[call-arg]
    return Revocations(settings, clock=clock)


def token(user_id: int, issued_at: float, family: str | None = None) -> Claims:
    return Claims(user_id, issued_at, issued_at + 900, "jti", family)


def test_a_user_revocation_refuses_tokens_issued_before_it_only(tmp_path: Path) -> None:
    clock = Clock()
    revocations = registry(tmp_path, clock)
    revocations.revoke_user(7, clock.now)
    assert revocations.revoked(token(7, clock.now - 1))
    assert not revocations.revoked(token(7, clock.now))
    assert not revocations.revoked(token(8, clock.now - 1))


def test_a_family_revocation_refuses_every_token_of_the_family(tmp_path: Path) -> None:
    clock = Clock()
    revocations = registry(tmp_path, clock)
    revocations.revoke_family("fam-a", 7, clock.now)
    assert revocations.revoked(token(7, clock.now - 100, "fam-a"))
    assert revocations.revoked(token(7, clock.now + 100, "fam-a"))
    assert not revocations.revoked(token(7, clock.now - 100, "fam-b"))
    assert not revocations.revoked(token(7, clock.now - 100))


def test_entries_are_kept_for_the_access_token_lifetime_plus_leeway(tmp_path: Path) -> None:
    clock = Clock()
    revocations = registry(tmp_path, clock)
    revocations.revoke_user(7, clock.now)
    revocations.revoke_family("fam-a", 7, clock.now)
    clock.now += 910 - 1
    revocations.revoke_user(8, clock.now)  # an insertion sweeps
    assert revocations.family_revoked("fam-a") and revocations.user_revoked_at(7)
    clock.now += max(2, SWEEP_INTERVAL)
    revocations.revoke_user(9, clock.now)
    assert not revocations.family_revoked("fam-a") and revocations.user_revoked_at(7) is None
    assert len(revocations) == 2
    # Something revoked longer ago than that (say, an old bus message) is not kept at all.
    revocations.revoke_family("fam-old", 7, clock.now - 911)
    assert not revocations.family_revoked("fam-old")


def test_control_messages_apply_and_malformed_ones_do_not(tmp_path: Path) -> None:
    clock = Clock()
    revocations = registry(tmp_path, clock)
    assert revocations.apply(user_revoked_message(3, clock.now))
    assert revocations.apply(family_revoked_message("fam-x", 3, clock.now))
    assert revocations.user_revoked_at(3) == clock.now and revocations.family_revoked("fam-x")
    for payload in ({}, {"userId": "x", "familyId": "f", "revokedAt": 1}, {"userId": 1}):
        assert not revocations.apply(Envelope(type="family_revoked", payload=payload))
    assert not revocations.apply(
        Envelope(type="family_revoked", payload={"userId": 1, "familyId": 5, "revokedAt": 1.0})
    )
    assert len(revocations) == 2
