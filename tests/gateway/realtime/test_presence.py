"""Presence without Redis: the local counts, the memory store, and how the hub announces flips."""

from __future__ import annotations

import asyncio
from typing import Any

from huddle.config import Settings
from huddle.events.envelope import PRESENCE_CHANGED, Envelope
from huddle.gateway.realtime.hub import Hub
from huddle.gateway.realtime.presence.batch import PresenceBatch, RecentCount
from huddle.gateway.realtime.presence.local import Presence
from huddle.gateway.realtime.presence.redis_store import RedisPresence
from huddle.gateway.realtime.presence.store import MemoryPresence, create_presence_store
from huddle.gateway.realtime.relay import EventRelay


class FakeSio:
    """Records room emits; the hub only needs `emit` for presence."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, Any, str]] = []

    async def emit(self, event: str, payload: Any, *, to: str, skip_sid: Any = None) -> None:
        self.emitted.append((event, payload, to))


class SilentStore(MemoryPresence):
    """A store that announces through the cluster (like a healthy Redis store)."""

    def __init__(self) -> None:
        super().__init__()
        self.flips: list[tuple[int, int, bool]] = []

    def changed(self, team_id: int, user_id: int, *, quiet: bool = False) -> bool:
        self.flips.append((team_id, user_id, quiet))
        return False


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, app_env="test", jwt_secret="x" * 40, **values)


async def window_end() -> None:
    """Past the default PRESENCE_BATCH_MS (50), when the hub has sent what it gathered."""
    await asyncio.sleep(0.1)


def test_a_user_flips_only_on_the_first_socket_up_and_the_last_down() -> None:
    presence = Presence()
    assert presence.join(1, 10) is True
    assert presence.join(1, 10) is False
    assert presence.join(2, 10) is True
    assert presence.join(1, 11) is True
    assert presence.online(1) == [10, 11]
    assert presence.teams_of(10) == [1, 2]
    assert presence.leave(1, 10) is False
    assert presence.leave(1, 10) is True
    assert presence.leave(1, 10) is False  # one leave too many changes nothing
    assert presence.online(1) == [11]
    assert presence.teams_of(10) == [2]
    assert sorted(presence.users()) == [10, 11]


def test_dropping_a_team_names_the_users_still_counted_in_it() -> None:
    presence = Presence()
    presence.join(1, 10)
    presence.join(1, 11)
    presence.join(2, 11)
    assert sorted(presence.drop_team(1)) == [10, 11]
    assert presence.online(1) == []
    assert presence.users() == [11]
    assert presence.teams_of(11) == [2]
    assert presence.drop_team(1) == []


async def test_the_memory_store_announces_every_flip_itself_except_quiet_ones() -> None:
    store = MemoryPresence()
    store.local.join(1, 10)
    assert store.changed(1, 10) is True
    assert store.changed(1, 10, quiet=True) is False
    assert await store.online(1) == [10]


def test_settings_choose_the_store() -> None:
    assert isinstance(create_presence_store(settings()), MemoryPresence)
    # Built without touching the network: nothing connects before start().
    store = create_presence_store(settings(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(store, RedisPresence)


async def test_the_hub_emits_a_flip_to_the_room_when_the_store_asks() -> None:
    sio = FakeSio()
    hub = Hub(sio, settings(), MemoryPresence())
    hub.presence.local.join(5, 10)
    await hub.announce(5, 10, online=True)
    await window_end()
    assert sio.emitted == [
        ("presence_changed", {"teamId": 5, "online": [10], "offline": []}, "team:5")
    ]


async def test_a_flip_undone_before_it_is_announced_is_not_emitted() -> None:
    """A socket that closes while its arrival is being announced must not leave a stale 'online'."""
    sio = FakeSio()
    hub = Hub(sio, settings(), MemoryPresence())
    hub.presence.local.join(5, 10)
    hub.presence.local.leave(5, 10)
    await hub.announce(5, 10, online=True)
    await window_end()
    assert sio.emitted == []


async def test_a_store_that_announces_through_the_cluster_keeps_the_hub_quiet() -> None:
    sio = FakeSio()
    store = SilentStore()
    hub = Hub(sio, settings(), store)
    store.local.join(5, 10)
    await hub.announce(5, 10, online=True)
    store.local.join(6, 10)
    hub.forget_team(6)
    await window_end()
    assert sio.emitted == []
    assert store.flips == [(5, 10, False), (6, 10, True)]


async def test_a_presence_control_message_reaches_each_named_team_room() -> None:
    sio = FakeSio()
    hub = Hub(sio, settings(), SilentStore())

    async def revoked(user_id: int, at: float) -> None:
        raise AssertionError("not a revocation")

    relay = EventRelay(hub, source=None, on_revoked=revoked)  # type: ignore[arg-type]
    payload = {"userId": 10, "online": False, "teamIds": [3, 4]}
    await relay.handle(Envelope(type=PRESENCE_CHANGED, payload=payload))
    await relay.handle(Envelope(type=PRESENCE_CHANGED, payload={"userId": "x"}))  # malformed
    await window_end()
    assert sio.emitted == [
        ("presence_changed", {"teamId": 3, "online": [], "offline": [10]}, "team:3"),
        ("presence_changed", {"teamId": 4, "online": [], "offline": [10]}, "team:4"),
    ]


# --- batching (PRESENCE_BATCH_MS) --------------------------------------------


def everyone(team_id: int) -> bool:
    return True


def test_a_window_keeps_only_real_changes_with_their_state_now_in_order_of_first_change() -> None:
    batch = PresenceBatch()
    batch.record(1, 10, online=True)
    batch.record(2, 11, online=True)
    batch.record(1, 12, online=True)
    batch.record(1, 13, online=True)
    batch.record(1, 13, online=False)  # a flap: came and went within the window
    batch.record(1, 10, online=False)
    batch.record(1, 10, online=True)  # went and came back: still a change from before
    assert batch.take(everyone) == [(1, [(10, True), (12, True)]), (2, [(11, True)])]
    assert not batch.pending
    assert batch.take(everyone) == []


def test_a_user_the_room_heard_online_who_leaves_and_returns_within_a_window_is_not_announced() -> (
    None
):
    batch = PresenceBatch()
    batch.record(1, 10, online=True)
    assert batch.take(everyone) == [(1, [(10, True)])]
    batch.record(1, 10, online=False)
    batch.record(1, 10, online=True)
    assert batch.take(everyone) == []
    batch.record(1, 10, online=True)  # restated (e.g. a store catching up): already heard
    assert batch.take(everyone) == []
    batch.record(1, 10, online=False)
    assert batch.take(everyone) == [(1, [(10, False)])]


def test_a_user_online_before_this_instance_heard_of_them_is_announced_going_offline() -> None:
    batch = PresenceBatch()
    batch.record(1, 10, online=False)
    assert batch.take(everyone) == [(1, [(10, False)])]


def test_what_rooms_heard_is_forgotten_when_users_go_offline_or_rooms_empty() -> None:
    batch = PresenceBatch()
    for user_id in (10, 11):
        batch.record(1, user_id, online=True)
    batch.record(2, 10, online=True)
    batch.take(everyone)
    batch.record(1, 10, online=False)
    batch.record(1, 11, online=False)
    batch.take(everyone)
    batch.forget_room(2)
    assert batch._heard == {}  # bounded by who is online in rooms someone here is in
    batch.record(3, 10, online=True)
    assert batch.take(lambda team_id: False) == [(3, [(10, True)])]
    assert batch._heard == {}


def test_a_forgotten_team_announces_nothing_it_had_pending() -> None:
    batch = PresenceBatch()
    batch.record(1, 10, online=True)
    batch.record(2, 10, online=True)
    batch.forget_team(1)
    assert batch.take(everyone) == [(2, [(10, True)])]


async def test_the_hub_sends_a_window_of_arrivals_once_at_its_end_team_by_team() -> None:
    sio = FakeSio()
    hub = Hub(sio, settings(), MemoryPresence())
    for team_id, user_id in ((5, 10), (6, 10), (5, 11)):
        hub.presence.local.join(team_id, user_id)
        await hub.announce(team_id, user_id, online=True)
    hub.presence.local.join(5, 12)
    await hub.announce(5, 12, online=True)
    hub.presence.local.leave(5, 12)
    await hub.announce(5, 12, online=False)
    assert sio.emitted == []
    assert len(hub._tasks) == 0  # one timer for the window, not a task per change
    await window_end()
    assert sio.emitted == [
        ("presence_changed", {"teamId": 5, "online": [10, 11], "offline": []}, "team:5"),
        ("presence_changed", {"teamId": 6, "online": [10], "offline": []}, "team:6"),
    ]


async def test_a_zero_window_announces_at_once() -> None:
    sio = FakeSio()
    hub = Hub(sio, settings(presence_batch_ms=0), MemoryPresence())
    hub.presence.local.join(5, 10)
    await hub.announce(5, 10, online=True)
    hub.presence.local.leave(5, 10)
    await hub.announce(5, 10, online=False)
    assert [(p["online"], p["offline"]) for _event, p, _room in sio.emitted] == [
        ([10], []),
        ([], [10]),
    ]


async def test_a_deleted_team_gets_no_announcement_gathered_before_it_went() -> None:
    sio = FakeSio()
    hub = Hub(sio, settings(), MemoryPresence())
    hub.presence.local.join(5, 10)
    await hub.announce(5, 10, online=True)
    hub.forget_team(5)
    await window_end()
    assert sio.emitted == []


async def test_stopping_drops_what_the_window_gathered_and_leaves_no_task() -> None:
    sio = FakeSio()
    hub = Hub(sio, settings(), MemoryPresence())
    hub.presence.local.join(5, 10)
    await hub.announce(5, 10, online=True)
    await hub.cancel_tasks()
    hub.presence.local.leave(5, 10)
    await hub.announce(5, 10, online=False)  # a socket closing during shutdown
    await window_end()
    assert sio.emitted == []
    assert not hub._tasks


async def test_changes_during_a_flush_wait_for_the_next_window() -> None:
    """Two flushes must not interleave: a later 'offline' could overtake the 'online' before it."""
    gate = asyncio.Event()

    class SlowSio(FakeSio):
        async def emit(self, event: str, payload: Any, *, to: str, skip_sid: Any = None) -> None:
            if payload["online"]:  # only the first frame (an arrival) is slow to leave
                await gate.wait()
            await super().emit(event, payload, to=to, skip_sid=skip_sid)

    sio = SlowSio()
    hub = Hub(sio, settings(presence_batch_ms=10), MemoryPresence())
    hub.presence.local.join(5, 10)
    await hub.announce(5, 10, online=True)
    await asyncio.sleep(0.05)  # the flush has started and is stuck in emit
    hub.presence.local.leave(5, 10)
    await hub.announce(5, 10, online=False)
    await asyncio.sleep(0.05)  # a second window's timer would have fired by now
    gate.set()
    await asyncio.sleep(0.05)
    assert [(p["online"], p["offline"]) for _event, p, _room in sio.emitted] == [
        ([10], []),
        ([], [10]),
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flap_a_listing_may_have_shown_is_restated() -> None:
    """A client that asked `team_presence` mid-flap was told 'online'; silence would leave it so."""
    clock = Clock()
    batch = PresenceBatch(grace=0.05, clock=clock)
    batch.record(1, 10, online=True)
    batch.record(1, 11, online=True)
    clock.now += 0.01
    batch.listed(1)
    clock.now += 0.01
    batch.record(1, 10, online=False)
    batch.record(2, 10, online=True)
    batch.record(2, 12, online=True)
    batch.record(2, 12, online=False)  # team 2 was not listed: its flap stays unheard
    assert batch.take(everyone) == [(1, [(10, False), (11, True)]), (2, [(10, True)])]


def test_a_listing_shortly_before_a_flap_began_counts_as_seeing_it() -> None:
    """A Redis store's answer can be ahead of the bus that brings the transition here."""
    clock = Clock()
    batch = PresenceBatch(grace=0.05, clock=clock)
    batch.listed(1)
    clock.now += 0.03
    batch.record(1, 10, online=True)
    batch.record(1, 10, online=False)
    assert batch.take(everyone) == [(1, [(10, False)])]
    clock.now += 0.1
    batch.record(1, 10, online=True)
    batch.record(1, 10, online=False)
    assert batch.take(everyone) == []


async def test_the_hub_learns_of_listings_through_the_store() -> None:
    sio = FakeSio()
    hub = Hub(sio, settings(), MemoryPresence())
    hub.presence.local.join(5, 10)
    await hub.announce(5, 10, online=True)
    assert await hub.presence.online(5) == [10]
    hub.presence.local.leave(5, 10)
    await hub.announce(5, 10, online=False)
    await window_end()
    assert sio.emitted == [
        ("presence_changed", {"teamId": 5, "online": [], "offline": [10]}, "team:5")
    ]


async def test_a_window_grows_with_the_room_so_a_big_team_costs_bounded_frames() -> None:
    """A team of 2,000 coming online at once must not cost a frame per member per 50 ms."""
    from huddle.gateway.realtime.hub import PRESENCE_WINDOW_MAX, PRESENCE_WINDOW_PER_MEMBER

    hub = Hub(FakeSio(), settings(), MemoryPresence())
    hub.presence.local.join(1, 10)
    assert hub.presence_window(1) == 0.05  # a small room: PRESENCE_BATCH_MS
    for user_id in range(2_000):
        hub.presence.local.join(2, user_id)
    assert hub.presence_window(2) == 2_000 * PRESENCE_WINDOW_PER_MEMBER
    for user_id in range(100_000):
        hub.presence.local.join(3, user_id)
    assert hub.presence_window(3) == PRESENCE_WINDOW_MAX


async def test_a_small_team_is_not_held_back_by_a_big_teams_long_window() -> None:
    sio = FakeSio()
    hub = Hub(sio, settings(), MemoryPresence())
    for user_id in range(1, 2_001):
        hub.presence.local.join(2, user_id)
    await hub.emit_presence(2, 1, online=True)  # a 1 s window
    hub.presence.local.join(1, 5)
    await hub.emit_presence(1, 5, online=True)  # a 50 ms window, opened later
    await window_end()
    assert sio.emitted == [
        ("presence_changed", {"teamId": 1, "online": [5], "offline": []}, "team:1")
    ]
    await hub.cancel_tasks()


def test_only_windows_that_are_over_are_taken_when_due() -> None:
    clock = Clock()
    batch = PresenceBatch(clock=clock)
    batch.record(1, 10, online=True, window=1.0)
    clock.now += 0.01
    batch.record(2, 11, online=True, window=0.05)
    assert batch.next_due() == clock.now + 0.05
    clock.now += 0.1
    assert batch.take(everyone, due_only=True) == [(2, [(11, True)])]
    assert batch.take(everyone, due_only=True) == []
    clock.now += 1.0
    assert batch.take(everyone, due_only=True) == [(1, [(10, True)])]
    assert not batch.pending


async def test_windows_stretch_while_presence_is_busy_across_many_teams() -> None:
    """A storm in many small teams at once: every window grows until presence's share of
    the process is about PRESENCE_BUDGET, and shrinks back once the storm is over."""
    from huddle.gateway.realtime.hub import PRESENCE_WINDOW_MAX

    clock = Clock()
    hub = Hub(FakeSio(), settings(), MemoryPresence())
    hub._presence_sent = RecentCount(clock)
    for team_id in range(1, 201):  # 200 teams of 20
        for user_id in range(20):
            hub.presence.local.join(team_id, team_id * 100 + user_id)
    assert hub.presence_window(1) == 0.05  # quiet: PRESENCE_BATCH_MS
    for team_id in range(1, 201):  # one frame to each team within a second: 4,000 frames
        await hub._send_presence(team_id, [(team_id * 100, True)])
    assert 0.5 < hub.presence_window(1) <= PRESENCE_WINDOW_MAX
    clock.now += 1.5  # the storm is over
    assert hub.presence_window(1) == 0.05


def test_recent_count_keeps_the_last_second_only() -> None:
    now = [100.0]
    recent = RecentCount(lambda: now[0])
    assert recent.last_second() == 0
    recent.add(5)
    now[0] = 100.04  # same tenth
    recent.add(2)
    now[0] = 100.55
    recent.add(10)
    assert recent.last_second() == 17
    now[0] = 101.02  # the first tenth (100.0) is a second old
    assert recent.last_second() == 10
    now[0] = 101.6
    assert recent.last_second() == 0
    recent.add(3)
    assert recent.last_second() == 3
