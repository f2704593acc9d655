"""The benchmark's scenarios: what each one asks of the load generator, and what it reads back.

Every scenario runs against a fresh server (see `bench.servers`) and returns
a flat dict of numbers (`metrics`) plus the load generator's own report
(`raw`), so a reader can check who was the bottleneck: `loadgenCpuPct` near
100 means the generator, not the server, set the pace.

| kind | load generator | main numbers |
| --- | --- | --- |
| handshake | `handshake`: open, authenticate, close | handshakes/s, server CPU µs each |
| reject | `reject --kind expired` | rejections/s, server CPU µs each |
| fanout | `fanout`: a room of N, `count` events per round | msgs/s, p50/p99, CPU µs per msg |
| broadcast | `fanout` with count 1 | one broadcast's p50/p99 to N clients |
| idle | `idle`: hold N authenticated sockets | RSS per connection over a baseline |

Users: handshakes use distinct users 1..N. The rooms and idle sockets cycle
through `users` distinct users (the `--users` option of main): Huddle
announces `presence_changed` to the whole team whenever a user's first
socket joins it, so N distinct users in one team cost up to N²/2 frames
before the measurement starts (batched per PRESENCE_BATCH_MS window, one
write per member per window, but still one frame per arrival and member);
cycling 100 users keeps that to ~5,000 and changes nothing else measured.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Final

from bench import peer_driver
from bench.servers import SECRET, Running, ServerOptions

Metrics = dict[str, float | int | None]

WARMUP_HANDSHAKES: Final = 100


@dataclass(frozen=True)
class Scenario:
    """One measurement, run the same way against each server."""

    key: str
    kind: str
    title: str
    clients: int
    users: int
    count: int = 1
    size: int = 300
    inner_rounds: int = 3
    warmup: int = 1
    concurrency: int = 50
    compression: bool = False
    settle_ms: int = 500
    """Pause before each fan-out round; idle waits 2x before its baseline and 4x after READY."""
    extra: dict[str, Any] = field(default_factory=dict)
    huddle_env: tuple[tuple[str, str], ...] = ()

    @property
    def server_options(self) -> ServerOptions:
        per_user = math.ceil(self.clients / max(1, self.users))
        return ServerOptions(
            compression=self.compression,
            max_connections_per_user=max(20, per_user + 5),
            extra_env=self.huddle_env,
        )


def _num(value: Any) -> float | int | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _median(values: list[float]) -> float | None:
    clean = sorted(v for v in values if isinstance(v, int | float))
    if not clean:
        return None
    mid = len(clean) // 2
    return clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2


class Runner:
    """Runs scenarios against started servers, the load generator pinned to `cpu`."""

    def __init__(self, *, cpu: int | None) -> None:
        self.cpu = cpu
        self.idle_loads: list[peer_driver.IdleLoad] = []

    def _loadgen(self, mode: str, options: dict[str, peer_driver.LoadgenOption]) -> dict[str, Any]:
        return peer_driver.run_loadgen(mode, options, secret=SECRET, cpu=self.cpu)

    def run(self, scenario: Scenario, server: Running) -> tuple[Metrics, dict[str, Any]]:
        """Measure `scenario` on `server`: (metrics, the generator's raw report)."""
        if scenario.kind == "handshake":
            return self._handshake(scenario, server)
        if scenario.kind == "reject":
            return self._reject(scenario, server)
        if scenario.kind in ("fanout", "broadcast", "compression"):
            return self._fanout(scenario, server)
        if scenario.kind == "idle":
            return self._idle(scenario, server)
        raise ValueError(f"unknown scenario kind {scenario.kind!r}")

    def _warm_up(self, scenario: Scenario, server: Running, *, every_user: bool = False) -> None:
        """Handshakes first, not measured: lazy imports, JIT, allocator pools.

        With `every_user`, each of the scenario's users connects once, so that
        the measured pass reads teams and tasks from a warm cache, as the Node
        peer's in-memory map does (issue 5: "teams/tasks from the warm cache").
        """
        clients = (
            scenario.users
            if every_user
            else min(WARMUP_HANDSHAKES, max(10, scenario.clients // 10))
        )
        self._loadgen(
            "handshake",
            {
                "url": server.base_url,
                "clients": clients,
                "concurrency": min(scenario.concurrency, clients),
                "users": f"1-{clients}",
                "timeout": 120,
            },
        )

    def _handshake(self, scenario: Scenario, server: Running) -> tuple[Metrics, dict[str, Any]]:
        self._warm_up(scenario, server, every_user=True)
        raw = self._loadgen(
            "handshake",
            {
                "url": server.base_url,
                "clients": scenario.clients,
                "concurrency": scenario.concurrency,
                "users": f"1-{scenario.users}",
                "server_pid": server.pid,
                "connect_timeout": 30,
                "timeout": max(120, scenario.clients // 20 + 60),
            },
        )
        part = raw.get("handshakes") or {}
        metrics: Metrics = {
            "handshakesPerSec": _num(part.get("perSec")),
            "serverCpuUsPerHandshake": _num(_get(raw, "server", "cpuUsPerHandshake")),
            "p50Ms": _num(_get(part, "latencyMs", "p50")),
            "p99Ms": _num(_get(part, "latencyMs", "p99")),
            "failed": scenario.clients - int(part.get("succeeded") or 0),
            "serverCpuPct": _num(_get(raw, "server", "pctOfOneCore")),
            "loadgenCpuPct": _num(_get(raw, "loadgenCpu", "pctOfOneCore")),
        }
        return metrics, raw

    def _reject(self, scenario: Scenario, server: Running) -> tuple[Metrics, dict[str, Any]]:
        self._warm_up(scenario, server)
        raw = self._loadgen(
            "reject",
            {
                "url": server.base_url,
                "clients": scenario.clients,
                "concurrency": scenario.concurrency,
                "users": f"1-{scenario.users}",
                "kind": "expired",
                "server_pid": server.pid,
                "connect_timeout": 30,
                "timeout": max(120, scenario.clients // 20 + 60),
            },
        )
        part = raw.get("rejections") or {}
        metrics: Metrics = {
            "rejectionsPerSec": _num(part.get("perSec")),
            "serverCpuUsPerRejection": _num(_get(raw, "server", "cpuUsPerRejection")),
            "p99Ms": _num(_get(part, "latencyMs", "p99")),
            "failed": scenario.clients - int(part.get("succeeded") or 0),
            "serverCpuPct": _num(_get(raw, "server", "pctOfOneCore")),
            "loadgenCpuPct": _num(_get(raw, "loadgenCpu", "pctOfOneCore")),
        }
        return metrics, raw

    def _fanout(self, scenario: Scenario, server: Running) -> tuple[Metrics, dict[str, Any]]:
        trigger = (
            f"{server.base_url}/bench/broadcast?room=team:1"
            f"&count={scenario.count}&size={scenario.size}"
        )
        expected_s = scenario.clients * scenario.count / 1000  # at a pessimistic 1k msgs/s
        round_timeout = int(min(600, max(30, expected_s * 2)))
        total_rounds = scenario.warmup + scenario.inner_rounds
        raw = self._loadgen(
            "fanout",
            {
                "url": server.base_url,
                "clients": scenario.clients,
                "concurrency": scenario.concurrency,
                "users": f"1-{scenario.users}",
                "server_pid": server.pid,
                "trigger_url": trigger,
                "expect": scenario.count,
                "rounds": scenario.inner_rounds,
                "warmup": scenario.warmup,
                "round_timeout": round_timeout,
                "settle": scenario.settle_ms,
                "deflate": scenario.compression,
                "connect_timeout": 30,
                "timeout": min(7200, 120 + scenario.clients // 20 + total_rounds * round_timeout),
            },
        )
        summary = raw.get("summary") or {}
        measured = [r for r in raw.get("rounds") or [] if not r.get("warmup")]
        errors = sum(
            int(r.get("lost") or 0) + int(r.get("duplicates") or 0) + int(r.get("outOfOrder") or 0)
            for r in measured
        )
        metrics: Metrics = {
            "msgsPerSec": _num(summary.get("medianMsgsPerSec")),
            "p50Ms": _num(summary.get("medianP50Ms")),
            "p99Ms": _num(summary.get("medianP99Ms")),
            # All measured rounds together: /proc's 10 ms ticks make one round coarse.
            "serverCpuUsPerMsg": _num(
                summary.get("serverCpuUsPerMsg", summary.get("medianServerCpuUsPerMsg"))
            ),
            "lost": _num(summary.get("totalLost")),
            "duplicates": _num(summary.get("totalDuplicates")),
            "outOfOrder": _num(summary.get("totalOutOfOrder")),
            "deliveryErrors": errors if measured else None,
            "receivers": _num(raw.get("receivers")),
            "serverCpuPct": _median([_get(r, "server", "pctOfOneCore") for r in measured]),
            "loadgenCpuPct": _num(summary.get("medianLoadgenCpuPct")),
            "frameBytes": _num(_get(measured[0], "trigger", "firstResponse", "frameBytes"))
            if measured
            else None,
        }
        return metrics, raw

    def _idle(self, scenario: Scenario, server: Running) -> tuple[Metrics, dict[str, Any]]:
        self._warm_up(scenario, server)
        time.sleep(2 * scenario.settle_ms / 1000)
        baseline = peer_driver.read_proc_stats(server.pid)
        load = peer_driver.start_idle_load(
            {
                "url": server.base_url,
                "clients": scenario.clients,
                "concurrency": scenario.concurrency,
                "users": f"1-{scenario.users}",
                "server_pid": server.pid,
                "connect_timeout": 60,
                "hold": 1800,
                "timeout": 3600,
            },
            secret=SECRET,
            cpu=self.cpu,
            ready_timeout=1800.0,
        )
        self.idle_loads.append(load)
        try:
            time.sleep(4 * scenario.settle_ms / 1000)
            loaded = peer_driver.read_proc_stats(server.pid)
            raw = load.finish(timeout=120.0)
        finally:
            load.stop()
            self.idle_loads.remove(load)
        held = int(raw.get("held") or 0)
        delta = loaded.rss_bytes - baseline.rss_bytes
        metrics: Metrics = {
            "rssPerConnKB": round(delta / held / 1024, 2) if held else None,
            "held": held,
            "dropped": _num(raw.get("droppedWhileHeld")),
            "baselineRssMB": round(baseline.rss_bytes / 1e6, 1),
            "loadedRssMB": round(loaded.rss_bytes / 1e6, 1),
            "connectPerSec": _num(_get(raw, "connect", "perSec")),
        }
        return metrics, raw

    def stop_all(self) -> None:
        """Stop any idle load generator still holding sockets (after an error or Ctrl-C)."""
        for load in list(self.idle_loads):
            load.stop()
        self.idle_loads.clear()
