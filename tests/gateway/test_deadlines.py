"""Token deadlines on one loop timer (`huddle.gateway.deadlines`).

The end-to-end behaviour (`token_expiring`, then TOKEN_EXPIRED on a live
socket) is in test_refresh.py; these pin what the shared timer promises:
never early, at most a tick late, one deadline per socket, and nothing left
of a socket once it is discarded.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from huddle.gateway.deadlines import TICK, Deadlines
from huddle.gateway.session import SocketSession

pytestmark = pytest.mark.asyncio


def _session(sid: str) -> SocketSession:
    return SocketSession(sid, "127.0.0.1", None, localhost=True)  # type: ignore[arg-type]


async def test_each_deadline_fires_once_never_early_and_at_most_a_tick_late() -> None:
    fired: dict[str, float] = {}
    deadlines = Deadlines(lambda session: fired.setdefault(session.sid, time.time()))
    start = time.time()
    wanted = {f"s{i}": start + 0.05 + 0.07 * i for i in range(6)}
    for sid, when in reversed(wanted.items()):  # armed latest first: each new one re-arms
        _session(sid).set_deadline(deadlines, when)
    async with asyncio.timeout(max(wanted.values()) - time.time() + TICK + 3.0):
        while len(fired) < len(wanted):
            await asyncio.sleep(0.01)
    assert set(fired) == set(wanted)
    for sid, when in wanted.items():
        # Never early; late by a tick at most, plus the loop's own delay (which a
        # loaded CI host, four test workers on two cores, stretches).
        assert when <= fired[sid] <= when + TICK + 0.25, sid
    assert len(deadlines) == 0


async def test_a_new_deadline_replaces_the_old_and_a_discarded_one_never_fires() -> None:
    fired: list[str] = []
    deadlines = Deadlines(lambda session: fired.append(session.sid))
    moved, dropped, kept = _session("moved"), _session("dropped"), _session("kept")
    now = time.time()
    moved.set_deadline(deadlines, now + 0.05)
    moved.set_deadline(deadlines, now + 0.6)  # replaces: fires once, late
    dropped.set_deadline(deadlines, now + 0.05)
    kept.set_deadline(deadlines, now + 0.05)
    dropped.cancel_all()  # what closing a socket does
    await asyncio.sleep(0.05 + TICK + 0.1)
    assert fired == ["kept"]
    await asyncio.sleep(0.6 + TICK)
    assert fired == ["kept", "moved"]


async def test_a_deadline_set_while_firing_fires_later_and_a_failing_one_stops_no_other() -> None:
    fired: list[tuple[str, float]] = []

    def fire(session: SocketSession) -> None:
        fired.append((session.sid, time.time()))
        if session.sid == "bad":
            raise RuntimeError("boom")
        if len(fired) < 3:  # the warning sets the expiry, as the authenticator does
            session.set_deadline(deadlines, time.time() + 0.3)

    deadlines = Deadlines(fire)
    now = time.time()
    bad, good = _session("bad"), _session("good")
    bad.set_deadline(deadlines, now + 0.02)
    good.set_deadline(deadlines, now + 0.02)
    # Due after ~0.02 + 0.3 s and two ticks at most; a loaded CI host (four test
    # workers on two cores) can add hundreds of milliseconds, so wait for it.
    async with asyncio.timeout(0.02 + 0.3 + 2 * TICK + 3.0):
        while len(fired) < 3:
            await asyncio.sleep(0.02)
    await asyncio.sleep(TICK + 0.05)  # and nothing more fires
    sids = [sid for sid, _ in fired]
    assert sorted(sids[:2]) == ["bad", "good"]
    assert sids[2:] == ["good"]  # its second deadline, set from inside the first
    assert fired[2][1] - fired[1][1] >= 0.3


async def test_a_discarded_socket_is_not_kept_alive() -> None:
    deadlines = Deadlines(lambda session: None)
    session = _session("gone")
    alone = sys.getrefcount(session)
    session.set_deadline(deadlines, time.time() + 3600)
    assert sys.getrefcount(session) > alone and len(deadlines) == 1
    session.cancel_all()
    assert sys.getrefcount(session) == alone and len(deadlines) == 0
    deadlines.close()
