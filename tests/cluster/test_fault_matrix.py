"""The fault matrix of docs/operations.md: each fault on a real split deployment, with figures.

One deployment for the module: `huddle api` reaching PostgreSQL through a TCP
proxy the test can cut, a `redis-server` of the test's own, and two
`huddle gateway` processes. Each test causes one fault for `OUTAGE` seconds
(`HUDDLE_FAULT_OUTAGE`, 3 by default, 10 for the documented figures) while a
client keeps writing tasks through the REST API and members listen on both
gateways, then asserts what a user would notice — error bodies, `/readyz`,
sockets kept, and every acknowledged write's event delivered exactly once, in
order — and reports how long each effect lasted (see `faults.py`). Each test
leaves the deployment whole again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.faults import (
    OUTAGE,
    RedisProcess,
    TcpProxy,
    Timeline,
    poll_readyz,
    spans,
    until,
)
from tests.factories import Factory, TestUser
from tests.gateway.live import LiveServer, SocketProbe

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    # A connection of the test's own clients or proxy, cut mid-request by the silent
    # fault, may be collected unclosed in this process (seen once in CI); the
    # servers under test are other processes, and what they did is asserted above.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

WRITE_EVERY = 0.1
"""Seconds between the writer's task creations (about 10 writes a second)."""


@dataclass
class Deployment:
    pg: TcpProxy
    redis: RedisProcess
    api: LiveServer
    gateways: list[LiveServer]


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str, redis_prefix: str
) -> Iterator[Deployment]:
    root: Path = tmp_path_factory.mktemp("faults")
    pg_port = int(postgres_server_url.rsplit(":", 1)[1].split("/")[0])
    pg = TcpProxy(pg_port).start()
    redis = RedisProcess(root / "redis").start()
    database_url = postgres_server_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    shared = {
        "DATABASE_URL": database_url.replace(f":{pg_port}/", f":{pg.port}/", 1),
        "REDIS_URL": redis.url,
        "REDIS_PREFIX": f"{redis_prefix}-faults",
        "JWT_LEEWAY": "0",
        "MAX_CONNECTIONS_PER_USER": "50",
    }
    api = LiveServer(root / "api", role="api", env=shared)
    gateways = [
        LiveServer(root / f"gw{i}", role="gateway", env={**shared, "BACKEND_URL": api.url})
        for i in range(2)
    ]
    try:
        api.start()
        for gateway in gateways:
            gateway.launch()
        for gateway in gateways:
            gateway.wait_healthy()
        yield Deployment(pg, redis, api, gateways)
    finally:
        for server in (*gateways, api):
            server.stop()
        redis.stop()
        pg.close()
    for server in (*gateways, api):
        assert "Traceback" not in server.log_text(tail=None), server.log_text()


@dataclass
class Write:
    at: float
    took: float
    status: int | None
    body: Any


@dataclass
class Writer:
    """Creates a task every `WRITE_EVERY` s until stopped, recording every answer."""

    client: httpx.AsyncClient
    team_id: int
    by: TestUser
    timeline: Timeline
    writes: list[Write] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """One write every WRITE_EVERY s, each on its own (as many users would), so a
        request that hangs does not hold back the next ones."""
        pending: set[asyncio.Task[None]] = set()
        n = 0
        while not self.stop.is_set():
            n += 1
            task = asyncio.create_task(self._write(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(WRITE_EVERY)
        await asyncio.gather(*pending)
        self.writes.sort(key=lambda w: w.at)

    async def _write(self, n: int) -> None:
        at, started = self.timeline.since_fault(), time.monotonic()
        try:
            response = await self.client.post(
                f"/api/teams/{self.team_id}/tasks", json={"title": f"w{n}"}, headers=self.by.headers
            )
            status, body = response.status_code, response.json()
        except httpx.HTTPError as exc:
            status, body = None, type(exc).__name__
        self.writes.append(Write(at, round(time.monotonic() - started, 3), status, body))

    @property
    def acknowledged(self) -> list[int]:
        return [w.body["id"] for w in self.writes if w.status == 201]

    def failed(self) -> list[Write]:
        return [w for w in self.writes if w.status != 201]

    def first_success_after(self, at: float) -> float | None:
        later = [w.at + w.took - at for w in self.writes if w.status == 201 and w.at >= at]
        return round(later[0], 2) if later else None


async def team_with_members(
    client: httpx.AsyncClient, n: int
) -> tuple[dict[str, Any], list[TestUser]]:
    factory = Factory(client)
    users = [await factory.user() for _ in range(n)]
    team = await factory.team(users[0])
    for user in users[1:]:
        await factory.member(team["id"], users[0], user)
    return team, users


async def listen(url: str, user: TestUser, **auth: Any) -> SocketProbe:
    probe = await SocketProbe(url).connect({"token": user.access_token, **auth})
    await probe.first("authenticated", timeout=10)
    return probe


def created(probe: SocketProbe, team_id: int) -> list[dict[str, Any]]:
    return [e for e in probe.all("task_created") if e["task"]["teamId"] == team_id]


def assert_in_order_once(events: list[dict[str, Any]]) -> None:
    ids = [e["eventId"] for e in events]
    assert ids == sorted(set(ids)), f"out of order or repeated: {ids}"


async def team_task_ids(client: httpx.AsyncClient, team_id: int, by: TestUser) -> set[int]:
    ids: set[int] = set()
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        response = await client.get(
            f"/api/teams/{team_id}/tasks", params=params, headers=by.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        ids.update(task["id"] for task in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            return ids


def named_down(timeline: Timeline, label: str) -> list[str]:
    """Every part `/readyz` (noted as `label`) named down at some point."""
    return sorted({part for _, down in timeline.times(label) for part in down})


@pytest.mark.parametrize("drop", [False, True], ids=["refused", "silent"])
async def test_postgres_unreachable(deployment: Deployment, drop: bool) -> None:
    """API: 503 DATABASE_UNAVAILABLE and /readyz naming the database; gateways keep every
    socket; every acknowledged write is there after, and writes succeed again."""
    d = deployment
    timeline = Timeline(f"postgres unreachable ({'packets dropped' if drop else 'refused'})")
    async with httpx.AsyncClient(base_url=d.api.url, timeout=30) as client:
        team, (owner, mate) = await team_with_members(client, 2)
        probes = [await listen(d.gateways[0].url, owner), await listen(d.gateways[1].url, mate)]
        stop = asyncio.Event()
        writer = Writer(client, team["id"], owner, timeline)
        background = [
            asyncio.create_task(writer.run()),
            asyncio.create_task(poll_readyz(timeline, "api", d.api.url, stop)),
            asyncio.create_task(poll_readyz(timeline, "gateway", d.gateways[0].url, stop)),
        ]
        try:
            await until(lambda: len(writer.acknowledged) >= 5, timeout=10)
            acked_before = len(writer.acknowledged)
            timeline.fault()
            await asyncio.to_thread(d.pg.cut, drop=drop)
            await asyncio.sleep(OUTAGE / 2)
            # A client connecting meanwhile still gets `authenticated` (the API cannot
            # load its data: degraded, from the gateway's cache or empty).
            started = time.monotonic()
            newcomer = await SocketProbe(d.gateways[1].url).connect({"token": mate.access_token})
            probes.append(newcomer)
            hello = await newcomer.next("authenticated", timeout=10)
            hello_took = round(time.monotonic() - started, 2)
            await asyncio.sleep(OUTAGE / 2)
            await asyncio.to_thread(d.pg.restore)
            timeline.restored()
            restored_at = timeline.restored_at or 0.0
            await until(lambda: writer.first_success_after(restored_at) is not None, timeout=30)
            await asyncio.sleep(1)
        finally:
            writer.stop.set()
            stop.set()
            await asyncio.gather(*background)

        try:
            failed = writer.failed()
            # What clients saw: 201, or 503 with the SPEC's error body; nothing else.
            for write in failed:
                assert write.status == 503, write
                assert set(write.body) == {"error"}, write
                assert write.body["error"]["code"] == "DATABASE_UNAVAILABLE", write
                assert isinstance(write.body["error"]["message"], str), write
            assert all(0 <= w.at <= restored_at + 1 for w in failed), failed
            # Clients hear it while the database is still away; no request hangs.
            assert failed and min(w.at + w.took for w in failed) < restored_at, failed
            latencies = [w.took for w in writer.writes if w.at >= 0]
            assert max(latencies) < 10, latencies
            assert hello["degraded"] is True and hello["user"]["id"] == mate.id
            api_ready = spans(timeline, "api", "database")
            assert api_ready["named_after_s"] is not None, timeline.seen
            assert api_ready["named_after_s"] < restored_at, timeline.seen
            assert api_ready["ready_after_restore_s"] is not None, timeline.seen
            # Gateways keep every socket.
            assert not any(p.disconnected.is_set() for p in probes)

            # Every acknowledged write is in the database, and its event reached both sockets.
            acked = set(writer.acknowledged)
            stored = await team_task_ids(client, team["id"], owner)
            assert acked <= stored, acked - stored
            for probe in probes[:2]:
                # Every stored write, acknowledged or not: a write whose commit the
                # cut made ambiguous is stored, but its request never published it;
                # the gateways fill that gap from the log once a later event shows it.
                await until(
                    lambda p=probe: (
                        stored
                        <= {  # type: ignore[misc]
                            e["task"]["id"] for e in created(p, team["id"])
                        }
                    ),
                    timeout=15,
                )
                assert_in_order_once(created(probe, team["id"]))
                assert {e["task"]["id"] for e in created(probe, team["id"])} == stored
            timeline.report(
                writes=len(writer.writes),
                acknowledged_before=acked_before,
                failed_503=len(failed),
                first_503_after_s=round(min(w.at + w.took for w in failed), 2),
                last_503_after_restore_s=round(max(w.at + w.took for w in failed) - restored_at, 2),
                writes_ok_again_after_restore_s=writer.first_success_after(restored_at),
                slowest_request_s=max(latencies),
                api_readyz=api_ready,
                gateway_readyz_down=named_down(timeline, "gateway"),
                newcomer_authenticated_s=hello_took,
                newcomer_degraded=hello["degraded"],
                sockets_dropped=sum(p.disconnected.is_set() for p in probes),
                acknowledged_missing=len(acked - stored),
                events_lost=0,
            )
        finally:
            for probe in probes:
                await probe.close()


def last_event_id(probe: SocketProbe) -> int:
    """The newest `eventId` this client has seen (what it sends back to resume)."""
    ids = [
        data["eventId"] for _, data in probe.events if isinstance(data, dict) and "eventId" in data
    ]
    return max(ids, default=0)


async def test_redis_stopped(deployment: Deployment) -> None:
    """Writes keep succeeding; gateways' /readyz names Redis; when Redis is back (empty, as
    after a crash) the backlog reaches both gateways by itself, and a client that left
    during the outage resumes by replay: 0 events lost."""
    d = deployment
    timeline = Timeline("redis stopped")
    async with httpx.AsyncClient(base_url=d.api.url, timeout=30) as client:
        team, (owner, mate, leaver) = await team_with_members(client, 3)
        probes = [await listen(d.gateways[0].url, owner), await listen(d.gateways[1].url, mate)]
        left = await listen(d.gateways[1].url, leaver)
        stop = asyncio.Event()
        writer = Writer(client, team["id"], owner, timeline)
        background = [
            asyncio.create_task(writer.run()),
            asyncio.create_task(poll_readyz(timeline, "api", d.api.url, stop)),
            asyncio.create_task(poll_readyz(timeline, "gateway", d.gateways[1].url, stop)),
        ]
        resumed: SocketProbe | None = None
        try:
            await until(lambda: len(created(left, team["id"])) >= 5, timeout=10)
            logged_before = [len(g.log_text(tail=None)) for g in d.gateways]
            timeline.fault()
            await asyncio.to_thread(d.redis.stop)
            resume_from = last_event_id(left)
            await left.close()  # a client that goes away during the outage
            await asyncio.sleep(OUTAGE)
            acked_during = len(writer.acknowledged)
            await asyncio.to_thread(d.redis.start)
            timeline.restored()
            restored_at = timeline.restored_at or 0.0
            acked = set(writer.acknowledged)  # at least everything written while Redis was away
            for probe in probes:
                await until(
                    lambda p=probe: acked <= {e["task"]["id"] for e in created(p, team["id"])},
                    timeout=30,
                )
            backlog_delivered = round(timeline.since_fault() - restored_at, 2)
            resumed = await SocketProbe(d.gateways[1].url).connect(
                {"token": leaver.access_token, "lastEventId": resume_from}
            )
            await resumed.next("sync_complete", timeout=10)
            upto = resumed.names.index("sync_complete")
            replayed = resumed.names[:upto].count("task_created")
            await asyncio.sleep(1)  # live writes after the outage
        finally:
            writer.stop.set()
            stop.set()
            await asyncio.gather(*background)

        try:
            # What clients saw: every write succeeded, Redis or not.
            assert writer.failed() == [], writer.failed()
            # What an operator saw: the outage named once per gateway, not once per retry.
            for gateway, start in zip(d.gateways, logged_before, strict=True):
                warnings = gateway.log_text(tail=None)[start:].count("bus_redis_unavailable")
                assert 1 <= warnings <= 3, warnings
            gateway_ready = spans(timeline, "gateway", "redis")
            assert gateway_ready["named_after_s"] is not None, timeline.seen
            assert gateway_ready["named_after_s"] < restored_at, timeline.seen
            assert gateway_ready["ready_after_restore_s"] is not None, timeline.seen
            assert not any(p.disconnected.is_set() for p in probes)
            acked = set(writer.acknowledged)
            stored = await team_task_ids(client, team["id"], owner)
            assert resumed is not None

            def seen_by(*clients: SocketProbe) -> list[dict[str, Any]]:
                return [e for c in clients for e in created(c, team["id"])]

            for clients in ((probes[0],), (probes[1],), (left, resumed)):
                await until(lambda c=clients: acked <= {e["task"]["id"] for e in seen_by(*c)}, 15)
            for probe in probes:
                assert_in_order_once(created(probe, team["id"]))
                assert {e["task"]["id"] for e in created(probe, team["id"])} == stored
            # The client that left: what it had, then the replay and live events after it.
            whole = seen_by(left, resumed)
            assert_in_order_once(whole)
            assert {e["task"]["id"] for e in whole} == stored
            timeline.report(
                writes=len(writer.writes),
                writes_during_outage=acked_during,
                failed=len(writer.failed()),
                slowest_request_s=max(w.took for w in writer.writes),
                gateway_readyz=gateway_ready,
                api_readyz=spans(timeline, "api", "redis"),
                cross_gateway_backlog_delivered_after_restore_s=backlog_delivered,
                replayed_to_resumer=replayed,
                sockets_dropped=sum(p.disconnected.is_set() for p in probes),
                events_lost=len(stored - {e["task"]["id"] for e in whole}),
            )
        finally:
            for probe in [*probes, left, resumed]:
                if probe is not None:
                    await probe.close()


async def test_gateway_killed(deployment: Deployment) -> None:
    """A gateway SIGKILLed mid-stream: its clients resume on the other gateway with their
    lastEventId and miss nothing (every event once, in order)."""
    d = deployment
    timeline = Timeline("gateway SIGKILLed")
    victim, survivor = d.gateways
    async with httpx.AsyncClient(base_url=d.api.url, timeout=30) as client:
        team, users = await team_with_members(client, 4)
        before = [await listen(victim.url, user) for user in users]
        after: list[SocketProbe] = []
        writer = Writer(client, team["id"], users[0], timeline)
        background = asyncio.create_task(writer.run())
        try:
            await until(lambda: all(len(created(p, team["id"])) >= 5 for p in before), timeout=10)
            timeline.fault()
            await asyncio.to_thread(victim.stop, signal.SIGKILL)

            async def resume(probe: SocketProbe, user: TestUser) -> tuple[SocketProbe, float]:
                await probe.gone(timeout=10)
                fresh = await SocketProbe(survivor.url).connect(
                    {"token": user.access_token, "lastEventId": last_event_id(probe)}
                )
                await fresh.next("sync_complete", timeout=10)
                return fresh, timeline.since_fault()

            pairs = zip(before, users, strict=True)
            results = await asyncio.gather(*(resume(p, u) for p, u in pairs))
            after = [fresh for fresh, _ in results]
            await asyncio.sleep(1)  # live writes after the resume
        finally:
            writer.stop.set()
            await background
            victim.launch()
            await asyncio.to_thread(victim.wait_healthy)

        try:
            assert writer.failed() == [], writer.failed()
            acked = set(writer.acknowledged)
            stored = await team_task_ids(client, team["id"], users[0])
            for old, new in zip(before, after, strict=True):
                await until(
                    lambda p=new, o=old: (
                        acked
                        <= {
                            e["task"]["id"] for e in created(o, team["id"]) + created(p, team["id"])
                        }
                    ),
                    timeout=15,
                )
                whole = created(old, team["id"]) + created(new, team["id"])
                assert_in_order_once(whole)
                assert {e["task"]["id"] for e in whole} == stored
            timeline.report(
                writes=len(writer.writes),
                failed=len(writer.failed()),
                clients=len(before),
                resumed_with_sync_complete_s=max(at for _, at in results),
                events_lost=0,
            )
        finally:
            for probe in [*before, *after]:
                await probe.close()


async def test_api_stopped(deployment: Deployment) -> None:
    """The API stopped: open sockets stay, a newcomer's `authenticated` arrives `degraded`,
    the gateway's /readyz names the backend, and `data_refreshed` follows the API's return."""
    d = deployment
    timeline = Timeline("api stopped")
    async with httpx.AsyncClient(base_url=d.api.url, timeout=30) as client:
        team, (owner, mate) = await team_with_members(client, 2)
        task = await Factory(client).task(team["id"], owner, assigneeId=mate.id)
        staying = await listen(d.gateways[0].url, owner)
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_readyz(timeline, "gateway", d.gateways[1].url, stop))
        newcomer: SocketProbe | None = None
        try:
            timeline.fault()
            await asyncio.to_thread(d.api.stop)
            with pytest.raises(httpx.ConnectError):
                await client.get("/healthz")
            started = time.monotonic()
            newcomer = await SocketProbe(d.gateways[1].url).connect({"token": mate.access_token})
            hello = await newcomer.next("authenticated", timeout=10)
            hello_took = round(time.monotonic() - started, 2)
            await asyncio.sleep(OUTAGE)
            d.api.launch()
            await asyncio.to_thread(d.api.wait_healthy)
            timeline.restored()
            restored_at = timeline.restored_at or 0.0
            refreshed = await newcomer.next("data_refreshed", timeout=45)
            refreshed_after = round(timeline.since_fault() - restored_at, 2)
            later = await Factory(client).task(team["id"], owner)
            for probe in (staying, newcomer):
                got = await probe.next("task_created", timeout=10)
                assert got["task"]["id"] == later["id"]
        finally:
            stop.set()
            await poller
        try:
            assert hello["degraded"] is True and hello["user"]["id"] == mate.id
            assert hello_took < 5
            assert [t["id"] for t in refreshed["teams"]] == [team["id"]]
            assert [t["id"] for t in refreshed["tasks"]] == [task["id"]]
            gateway_ready = spans(timeline, "gateway", "backend")
            assert gateway_ready["named_after_s"] is not None, timeline.seen
            assert gateway_ready["named_after_s"] < restored_at, timeline.seen
            assert not staying.disconnected.is_set()
            timeline.report(
                rest="connection refused while stopped (a load balancer's other API takes it)",
                newcomer_authenticated_s=hello_took,
                newcomer_degraded=hello["degraded"],
                newcomer_teams_while_down=len(hello["teams"]),
                data_refreshed_after_restore_s=refreshed_after,
                gateway_readyz=gateway_ready,
                sockets_dropped=int(staying.disconnected.is_set()),
                events_lost=0,
            )
        finally:
            for probe in (staying, newcomer):
                if probe is not None:
                    await probe.close()
