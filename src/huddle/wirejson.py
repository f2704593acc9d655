"""JSON for the Socket.IO wire: orjson behind the `dumps`/`loads` pair python-socketio calls.

The database's JSON columns use the same pair (`db/session.py`).

python-socketio and python-engineio take a JSON module (`AsyncServer(json=…)`)
and call `dumps(data, separators=(",", ":"))` and `loads(text)` on it. Every
handshake encodes an `authenticated` payload and decodes a CONNECT packet,
and every broadcast encodes its event once: orjson does each an order of
magnitude faster than the standard library (docs/benchmarks.md).

What differs from `json`, and why it is fine on this wire:
- output is always compact and UTF-8 (no `\\uXXXX` escapes for non-ASCII),
  which is what Node's `JSON.stringify` sends too; keyword arguments such as
  `separators` are accepted and ignored;
- non-string dict keys are written as strings, as `json` does
  (`OPT_NON_STR_KEYS`); what orjson refuses to encode (integers beyond 64 bits)
  is handed to `json`, so `bytes` still raise `TypeError`, which
  python-socketio and `FastManager` rely on to switch to binary packets;
- what orjson will not read (NaN, Infinity, numbers beyond a double) goes to
  the standard library, with integers bounded to 100 digits (as engine.io's
  own `loads` does, so a huge number cannot cost quadratic parsing time);
  integers beyond 64 bits that fit a double come back as floats (as
  JavaScript reads them); malformed input raises `json.JSONDecodeError` (a
  `ValueError`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
MAX_INTEGER_DIGITS = 100


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS:
        raise ValueError("Integer is too large")
    return int(text)


def dumps(obj: Any, **_: Any) -> str:
    """Compact JSON text for `obj`."""
    try:
        return orjson.dumps(obj, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        # Raises TypeError itself for what JSON cannot carry (bytes, objects).
        return json.dumps(obj, separators=(",", ":"))


def loads(text: str | bytes, **_: Any) -> Any:
    """The value of JSON `text`; `json.JSONDecodeError` if it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # What orjson refuses but Python's json (and so python-socketio) took:
        # NaN and Infinity, and numbers beyond a double; it raises for what is not JSON.
        return json.loads(text, parse_int=_bounded_int)
