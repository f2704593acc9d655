"""Presence without Redis: the local counts, the memory store, and how the hub announces flips."""

from __future__ import annotations

from typing import Any

from huddle.config import Settings
from huddle.events.envelope import PRESENCE_CHANGED, Envelope
from huddle.gateway.hub import Hub
from huddle.gateway.presence import MemoryPresence, Presence, create_presence_store
from huddle.gateway.presence_redis import RedisPresence
from huddle.gateway.relay import EventRelay


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
    assert sio.emitted == [
        ("presence_changed", {"teamId": 5, "userId": 10, "online": True}, "team:5")
    ]


async def test_a_flip_undone_before_it_is_announced_is_not_emitted() -> None:
    """A socket that closes while its arrival is being announced must not leave a stale 'online'."""
    sio = FakeSio()
    hub = Hub(sio, settings(), MemoryPresence())
    hub.presence.local.join(5, 10)
    hub.presence.local.leave(5, 10)
    await hub.announce(5, 10, online=True)
    assert sio.emitted == []


async def test_a_store_that_announces_through_the_cluster_keeps_the_hub_quiet() -> None:
    sio = FakeSio()
    store = SilentStore()
    hub = Hub(sio, settings(), store)
    store.local.join(5, 10)
    await hub.announce(5, 10, online=True)
    store.local.join(6, 10)
    hub.forget_team(6)
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
    assert sio.emitted == [
        ("presence_changed", {"teamId": 3, "userId": 10, "online": False}, "team:3"),
        ("presence_changed", {"teamId": 4, "userId": 10, "online": False}, "team:4"),
    ]
