"""The JWT attack matrix: every forged or stale token is refused with the SPEC code."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from huddle.accel.pyjwt import _SegmentJWS
from huddle.config import Settings
from huddle.errors import (
    AuthError,
    RefreshTokenExpired,
    RefreshTokenInvalid,
    TokenExpired,
    TokenInvalid,
)
from huddle.security.tokens import TokenService

SECRET = "unit-test-secret-that-is-definitely-32-bytes"


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(app_env="test", huddle_data_dir=tmp_path, jwt_secret=SECRET, **extra)


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "7", "type": "access", "iat": now, "exp": now + 600, "jti": "j", **extra}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def rsa_keys(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "private.pem").write_bytes(private)
    (tmp_path / "public.pem").write_bytes(public)
    return tmp_path / "private.pem", tmp_path / "public.pem", public


def test_round_trip_carries_the_user(tmp_path: Path) -> None:
    service = TokenService(settings(tmp_path))
    issued = service.issue_access(42)
    assert service.verify_access(issued.token).user_id == 42


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize(
    ("name", "forge", "error"),
    [
        (
            "alg none",
            lambda: f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
            TokenInvalid,
        ),
        ("wrong secret", lambda: jwt.encode(claims(), "x" * 40, algorithm="HS256"), TokenInvalid),
        ("other hmac alg", lambda: jwt.encode(claims(), SECRET, algorithm="HS512"), TokenInvalid),
        (
            "refresh as access",
            lambda: jwt.encode(claims(type="refresh", fam="f"), SECRET),
            TokenInvalid,
        ),
        (
            "no type",
            lambda: jwt.encode({k: v for k, v in claims().items() if k != "type"}, SECRET),
            TokenInvalid,
        ),
        ("expired", lambda: jwt.encode(claims(exp=int(time.time()) - 60), SECRET), TokenExpired),
        (
            "not yet valid",
            lambda: jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET),
            TokenInvalid,
        ),
        (
            "issued in the future",
            lambda: jwt.encode(claims(iat=int(time.time()) + 3600), SECRET),
            TokenInvalid,
        ),
        ("non-numeric sub", lambda: jwt.encode(claims(sub="admin"), SECRET), TokenInvalid),
        ("garbage", lambda: "not.a.jwt", TokenInvalid),
        ("empty", lambda: "", TokenInvalid),
    ],
)
def test_forged_access_tokens_are_refused(
    tmp_path: Path, name: str, forge: Any, error: type[AuthError]
) -> None:
    service = TokenService(settings(tmp_path, jwt_leeway=0))
    with pytest.raises(error):
        service.verify_access(forge())


def test_tampered_payload_is_refused(tmp_path: Path) -> None:
    service = TokenService(settings(tmp_path))
    header, _, signature = service.issue_access(7).token.split(".")
    forged = f"{header}.{b64(claims(sub='1'))}.{signature}"
    with pytest.raises(TokenInvalid):
        service.verify_access(forged)


def test_expired_token_with_a_bad_signature_is_invalid_not_expired(tmp_path: Path) -> None:
    service = TokenService(settings(tmp_path))
    token = jwt.encode(claims(exp=int(time.time()) - 60), "y" * 40, algorithm="HS256")
    with pytest.raises(TokenInvalid):
        service.verify_access(token)


def test_leeway_accepts_small_clock_skew(tmp_path: Path) -> None:
    service = TokenService(settings(tmp_path, jwt_leeway=30))
    token = jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    assert service.verify_access(token).user_id == 7


def test_a_token_accepted_before_is_refused_once_it_expires(tmp_path: Path) -> None:
    # Verified tokens are remembered; expiry must still end them at PyJWT's instant.
    service = TokenService(settings(tmp_path, jwt_leeway=0))
    exp = int(time.time()) + 1
    token = jwt.encode(claims(exp=exp), SECRET, algorithm="HS256")
    assert service.verify_access(token).user_id == 7
    assert service.verify_access(token).user_id == 7
    time.sleep(max(0.0, exp - time.time()) + 0.01)
    with pytest.raises(TokenExpired):
        service.verify_access(token)
    with pytest.raises(TokenExpired):
        TokenService(settings(tmp_path, jwt_leeway=0)).verify_access(token)  # a fresh look agrees
    with pytest.raises(TokenExpired):
        service.verify_access(token)


def test_key_confusion_hs256_signed_with_the_rsa_public_key(tmp_path: Path) -> None:
    private, public, public_pem = rsa_keys(tmp_path)
    service = TokenService(
        settings(
            tmp_path,
            jwt_algorithm="RS256",
            jwt_private_key_file=private,
            jwt_public_key_file=public,
        )
    )
    assert service.verify_access(service.issue_access(3).token).user_id == 3
    # PyJWT refuses PEM keys as HMAC secrets, so forge the signature by hand.
    import hashlib
    import hmac

    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    with pytest.raises(TokenInvalid):
        service.verify_access(forged)


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_asymmetric_algorithms_sign_and_verify(tmp_path: Path, algorithm: str) -> None:
    key: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ES256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "k.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signer = TokenService(
        settings(
            tmp_path,
            jwt_algorithm=algorithm,
            jwt_private_key_file=tmp_path / "k.pem",
            jwt_public_key_file=tmp_path / "k.pub",
        )
    )
    verifier = TokenService(
        settings(tmp_path, jwt_algorithm=algorithm, jwt_public_key_file=tmp_path / "k.pub"),
        can_sign=False,
    )
    assert verifier.verify_access(signer.issue_access(9).token).user_id == 9
    with pytest.raises(TokenInvalid):
        verifier.verify_access(jwt.encode(claims(), SECRET, algorithm="HS256"))


def test_issuer_and_audience_are_checked_when_set(tmp_path: Path) -> None:
    service = TokenService(settings(tmp_path, jwt_issuer="huddle", jwt_audience="huddle-clients"))
    good = service.issue_access(5).token
    assert jwt.decode(good, options={"verify_signature": False})["iss"] == "huddle"
    assert service.verify_access(good).user_id == 5
    for wrong in (
        claims(iss="evil", aud="huddle-clients"),
        claims(iss="huddle", aud="someone-else"),
        claims(),
    ):
        with pytest.raises(TokenInvalid):
            service.verify_access(jwt.encode(wrong, SECRET, algorithm="HS256"))


def test_refresh_tokens_verify_separately(tmp_path: Path) -> None:
    service = TokenService(settings(tmp_path, jwt_leeway=0))
    refresh = service.issue_refresh(4, "family-1")
    assert service.verify_refresh(refresh.token).family_id == "family-1"
    with pytest.raises(RefreshTokenInvalid):
        service.verify_refresh(service.issue_access(4).token)
    expired = jwt.encode(claims(type="refresh", fam="f", exp=int(time.time()) - 5), SECRET)
    with pytest.raises(RefreshTokenExpired):
        service.verify_refresh(expired)


def test_the_prepared_hmac_key_still_refuses_other_keys(tmp_path: Path) -> None:
    service = TokenService(settings(tmp_path))
    other = TokenService(
        Settings(app_env="test", huddle_data_dir=tmp_path, jwt_secret="another-secret-" * 3)
    )
    with pytest.raises(TokenInvalid):
        service.verify_access(other.issue_access(1).token)
    assert service.verify_access(service.issue_access(1).token).user_id == 1


@given(
    st.binary(max_size=12) | st.text(alphabet="AQgwBRhx_-=+/. \x00é", max_size=12).map(str.encode)
)
def test_the_c_segment_check_agrees_with_pyjwt_on_any_bytes(segment: bytes) -> None:
    """`_SegmentJWS` decodes exactly what PyJWT's own check decodes, and refuses the rest."""

    def outcome(decode: Any) -> bytes | str:
        try:
            return bytes(decode(segment, "payload"))
        except jwt.DecodeError as exc:
            return f"refused: {exc}"

    reference = getattr(jwt.PyJWS, "_decode_base64url_segment", None)
    if reference is None:  # an older PyJWT: nothing to agree with
        pytest.skip("this PyJWT has no segment check")
    assert outcome(_SegmentJWS._decode_base64url_segment) == outcome(reference)


@pytest.mark.parametrize("junk", ["!", "===", "a=", ".", " ", "+", "/"])
def test_tokens_with_junk_in_a_segment_are_refused(tmp_path: Path, junk: str) -> None:
    service = TokenService(settings(tmp_path))
    header, payload, signature = service.issue_access(7).token.split(".")
    for forged in (
        f"{header}.{payload}{junk}.{signature}",
        f"{header}.{payload}.{signature}{junk}",
    ):
        with pytest.raises(TokenInvalid):
            service.verify_access(forged)
