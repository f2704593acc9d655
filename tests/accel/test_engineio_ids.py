"""Session ids of the engineio accel module: engine.io's shape, random bytes from a pool."""

from __future__ import annotations

import base64
import re

import engineio

from huddle.accel.engineio import ID_POOL, LeanEngineServer


def test_session_ids_keep_engineio_shape_and_never_repeat_across_pool_refills() -> None:
    lean = LeanEngineServer(async_mode="asgi")
    stock = engineio.AsyncServer(async_mode="asgi")
    ids = [lean.generate_id() for _ in range(3 * ID_POOL + 7)]
    shape = re.compile(r"[A-Za-z0-9_-]{20}")
    assert all(shape.fullmatch(sid) for sid in ids)
    assert shape.fullmatch(stock.generate_id())
    assert len(set(ids)) == len(ids)
    # The last 3 bytes are engine.io's sequence number, counting up from where it was.
    sequence = [int.from_bytes(base64.urlsafe_b64decode(sid)[12:], "big") for sid in ids]
    assert sequence == list(range(sequence[0], sequence[0] + len(ids)))
    # The random part differs from one id to the next, refills included.
    randoms = {base64.urlsafe_b64decode(sid)[:12] for sid in ids}
    assert len(randoms) == len(ids)
