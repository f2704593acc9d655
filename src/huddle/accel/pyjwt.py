"""PyJWT, verified faster: the same checks, two of them done once or in C.

Overrides (against PyJWT's public `jwt.decode`):

1. `_SegmentJWS._decode_base64url_segment` — PyJWT 2.15 checks each byte of
   each token segment against the base64url alphabet in a Python generator
   (`any(c not in ALPHABET for c in segment)`), a third of an HS256
   verification. This is the same check (padding rules, alphabet, the
   canonical-encoding test, the same `DecodeError`s) with `bytes.translate`
   finding stray bytes. A hypothesis test holds it equal to PyJWT's own.
2. `_PreparedHMAC.prepare_key` — PyJWT's `HMACAlgorithm` re-examines the key
   on every verification (PEM, SSH, DER and JWK probes, two of them by way
   of exceptions), about half of what verifying an HS256 token costs. The
   configured key never changes, so its prepared form is kept; any other key
   goes PyJWT's way.

Private names used: `PyJWT._jws` (each `PyJWT` has its own `PyJWS` since
2.10), `PyJWS._decode_base64url_segment` (2.15), `PyJWS.register_algorithm`
/ `unregister_algorithm` on that private instance. Figures:
docs/benchmarks.md ("Handshake path").
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm, get_default_algorithms
from jwt.utils import base64url_decode, base64url_encode

from huddle.accel import Gate, Tested

GATE = Gate((Tested("PyJWT", "jwt", ("2.15.1",)),))

_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class _PreparedHMAC(HMACAlgorithm):
    """PyJWT's HMAC with the configured secret prepared once (override 2)."""

    def __init__(self, hash_alg: Any, key: str | bytes) -> None:
        super().__init__(hash_alg)
        self._key = key
        self._prepared = super().prepare_key(key)  # raises as PyJWT would, for a bad key

    def prepare_key(self, key: str | bytes) -> bytes:
        if key is self._key:
            return self._prepared
        return super().prepare_key(key)


class _SegmentJWS(jwt.PyJWS):
    """PyJWS whose segment check runs in C (override 1)."""

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


def decoder(algorithm: str, key: str | bytes) -> Callable[..., dict[str, Any]]:
    """`decode` of a private `PyJWT` with both overrides (the HMAC one for HMAC keys)."""
    default = get_default_algorithms().get(algorithm)
    decoding = jwt.PyJWT()
    jws = _SegmentJWS(options=decoding._jws.options)
    decoding._jws = jws
    if type(default) is not HMACAlgorithm:
        return decoding.decode
    try:
        prepared = _PreparedHMAC(default.hash_alg, key)
    except jwt.PyJWTError:
        return jwt.decode  # a key PyJWT refuses: let every verification say so, as before
    jws.unregister_algorithm(algorithm)
    jws.register_algorithm(algorithm, prepared)
    return decoding.decode
