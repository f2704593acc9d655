"""The benchmark's scenarios: what each one asks of the load generator, and what it reads back.

Every scenario runs against a fresh server (see `bench.servers`) and returns
a flat dict of numbers (`metrics`) plus the load generator's own report
(`raw`), so a reader can check who was the bottleneck: `loadgenCpuPct` near
100 means the generator, not the server, set the pace.

- handshake: `handshake`, open, authenticate, close; warm (every user once
  first) or cold (nothing first). Handshakes/s, server CPU per handshake.
- reject: `reject --kind expired`. Rejections/s, server CPU per rejection.
- storm: `storm`, phases of users connecting 100 at a time and staying, on a
  cold server. Handshakes/s, p50/p99, CPU per handshake, presence frames per
  client, RSS per connection at the end.
- fanout: `fanout`, a room of N, `count` events per round from the bench
  trigger. Msgs/s, p50/p99, CPU per message, loss/duplicates/order.
- rest-fanout: `fanout` whose trigger is `PATCH /api/tasks/{id}` on Huddle,
  one editor or several at once; the same numbers. The peer has no REST API
  and runs its bench trigger.
- broadcast: `fanout` with count 1. One broadcast's p50/p99 to N clients.
- idle: `idle`, hold N authenticated sockets. RSS per connection over a
  baseline.

Users: every client of a scenario is a distinct user (users `first_user ..
first_user + users - 1`), as in a real team, with presence on as Huddle
ships it; the load generator counts the `presence_changed` frames each
client receives. `users` below `clients` (the harness's `--users`) cycles
that many users instead, for comparisons with older runs.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Final

from bench import peer_driver
from bench.servers import SECRET, Running, ServerOptions

Metrics = dict[str, float | int | None]

WARMUP_HANDSHAKES: Final = 100
REST_EDIT_BODY: Final = '{"title":"bench edit {{n}}"}'
"""Each PATCH changes the title to one never used before, so every call is an edit and an event."""


@dataclass(frozen=True)
class Scenario:
    """One measurement, run the same way against each server."""

    key: str
    kind: str
    title: str
    clients: int
    users: int
    """Distinct users: the clients use users first_user .. first_user + users - 1, cycling."""
    first_user: int = 1
    count: int = 1
    size: int = 300
    inner_rounds: int = 3
    warmup: int = 1
    concurrency: int = 50
    compression: bool = False
    settle_ms: int = 500
    """Pause before each fan-out round; idle waits 2x before its baseline and 4x after READY."""
    quiet_ms: int = 2500
    """After connecting, wait until no event frame came for this long (presence settling).

    Longer than Huddle's longest presence window (2 s, for rooms of 4,000 or
    more): a shorter wait could end before the last window's frames go out.
    """
    cold: bool = False
    """handshake: no warm-up at all, as after a restart."""
    phases: tuple[tuple[int, int], ...] = ()
    """storm: (first user, last user) of each phase."""
    editors: int = 1
    """rest-fanout: users editing at once (1: the team's owner alone)."""
    edit_tasks: tuple[tuple[int, int], ...] = ()
    """rest-fanout: (editor's user id, id of the task they edit), one per editor."""
    extra: dict[str, Any] = field(default_factory=dict)
    huddle_env: tuple[tuple[str, str], ...] = ()

    @property
    def user_range(self) -> str:
        return f"{self.first_user}-{self.first_user + self.users - 1}"

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


def _median(values: list[Any]) -> float | None:
    clean = sorted(v for v in values if isinstance(v, int | float))
    if not clean:
        return None
    mid = len(clean) // 2
    return clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2


def _kb(value: Any) -> float | None:
    return round(value / 1024, 2) if isinstance(value, int | float) else None


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
        if scenario.kind == "storm":
            return self._storm(scenario, server)
        if scenario.kind in ("fanout", "broadcast", "compression", "rest-fanout"):
            return self._fanout(scenario, server)
        if scenario.kind == "idle":
            return self._idle(scenario, server)
        raise ValueError(f"unknown scenario kind {scenario.kind!r}")

    def _warm_up(self, scenario: Scenario, server: Running, *, every_user: bool = False) -> None:
        """Handshakes first, not measured: lazy imports, JIT, allocator pools.

        With `every_user`, each of the scenario's users connects once, so that
        the measured pass reads teams and tasks from a warm cache, as the Node
        peer's in-memory map does (issue 5: "teams/tasks from the warm cache").
        Otherwise the warm-up uses users the scenario does not (the ones
        right after its range), so that its users stay cold.
        """
        if every_user:
            clients, first = scenario.users, scenario.first_user
        else:
            clients = min(WARMUP_HANDSHAKES, max(10, scenario.clients // 10))
            first = scenario.first_user + scenario.users
        self._loadgen(
            "handshake",
            {
                "url": server.base_url,
                "clients": clients,
                "concurrency": min(scenario.concurrency, clients),
                "users": f"{first}-{first + clients - 1}",
                "timeout": 300,
            },
        )

    def _handshake(self, scenario: Scenario, server: Running) -> tuple[Metrics, dict[str, Any]]:
        if not scenario.cold:
            self._warm_up(scenario, server, every_user=True)
        raw = self._loadgen(
            "handshake",
            {
                "url": server.base_url,
                "clients": scenario.clients,
                "concurrency": scenario.concurrency,
                "users": scenario.user_range,
                "server_pid": server.pid,
                "connect_timeout": 60,
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
            "presenceFramesPerClient": _num(_get(raw, "presence", "perClientMean")),
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
                "users": scenario.user_range,
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

    def _storm(self, scenario: Scenario, server: Running) -> tuple[Metrics, dict[str, Any]]:
        """Phases of distinct users on the fresh server, nothing before: every cache is cold."""
        # Generous: quadratic presence took ~2 minutes for 2,000 users of one team.
        drain_s = 600
        raw = self._loadgen(
            "storm",
            {
                "url": server.base_url,
                "phases": ",".join(f"{a}-{b}" for a, b in scenario.phases),
                "concurrency": scenario.concurrency,
                "server_pid": server.pid,
                "quiet": scenario.quiet_ms,
                "drain_timeout": drain_s,
                "connect_timeout": 120,
                "timeout": min(7200, 120 + scenario.clients // 5 + len(scenario.phases) * drain_s),
            },
        )
        metrics: Metrics = {}
        phases = raw.get("phases") or []
        for k, phase in enumerate(phases, start=1):
            shakes = phase.get("handshakes") or {}
            metrics.update(
                {
                    f"phase{k}.handshakesPerSec": _num(shakes.get("perSec")),
                    f"phase{k}.p50Ms": _num(_get(shakes, "latencyMs", "p50")),
                    f"phase{k}.p99Ms": _num(_get(shakes, "latencyMs", "p99")),
                    f"phase{k}.serverCpuUsPerHandshake": _num(
                        _get(phase, "serverUntilQuiet", "cpuUsPerHandshake")
                    ),
                    f"phase{k}.serverCpuUsPerHandshakeConnect": _num(
                        _get(phase, "server", "cpuUsPerHandshake")
                    ),
                    f"phase{k}.presenceFramesPerClient": _num(
                        _get(phase, "presence", "perOnlineClient")
                    ),
                    f"phase{k}.presenceTailMs": _num(_get(phase, "drain", "lastFrameMs")),
                    f"phase{k}.failed": int(shakes.get("requested") or 0)
                    - int(shakes.get("succeeded") or 0),
                }
            )
        first = phases[0] if phases else {}
        metrics.update(
            {
                "rssPerConnKB": _kb(_get(raw, "server", "rssPerConnBytes")),
                "held": _num(raw.get("held")),
                "presenceFramesPerClient": _num(_get(raw, "presence", "perClientMean")),
                "presenceFrames": _num(_get(raw, "presence", "frames")),
                "serverCpuPct": _num(_get(first, "server", "pctOfOneCore")),
                "loadgenCpuPct": _num(_get(first, "loadgenCpu", "pctOfOneCore")),
            }
        )
        return metrics, raw

    def _trigger(self, scenario: Scenario, server: Running) -> dict[str, peer_driver.LoadgenOption]:
        """How a fan-out round makes its events: the bench trigger, or REST edits on Huddle.

        The peer has no REST API, so in `rest-fanout` it runs its bench trigger
        (the round's events in one call), and the report compares Huddle's REST
        path with that (issue 12's table does the same).
        """
        if scenario.kind != "rest-fanout" or server.name != "huddle":
            return {
                "trigger_url": f"{server.base_url}/bench/broadcast?room=team:1"
                f"&count={scenario.count}&size={scenario.size}",
            }
        plan = [
            {"url": f"{server.base_url}/api/tasks/{task_id}", "auth": f"mint:{user_id}"}
            for user_id, task_id in scenario.edit_tasks
        ]
        return {
            "trigger_plan": json.dumps(plan),
            "trigger_method": "PATCH",
            "trigger_body": REST_EDIT_BODY,
            "trigger_repeat": scenario.count // len(plan),
        }

    def _fanout(self, scenario: Scenario, server: Running) -> tuple[Metrics, dict[str, Any]]:
        expected_s = scenario.clients * scenario.count / 1000  # at a pessimistic 1k msgs/s
        round_timeout = int(min(600, max(30, expected_s * 2)))
        total_rounds = scenario.warmup + scenario.inner_rounds
        drain_s = 600
        raw = self._loadgen(
            "fanout",
            {
                "url": server.base_url,
                "clients": scenario.clients,
                "concurrency": scenario.concurrency,
                "users": scenario.user_range,
                "server_pid": server.pid,
                **self._trigger(scenario, server),
                "expect": scenario.count,
                "rounds": scenario.inner_rounds,
                "warmup": scenario.warmup,
                "round_timeout": round_timeout,
                "settle": scenario.settle_ms,
                "quiet": scenario.quiet_ms,
                "drain_timeout": drain_s,
                "deflate": scenario.compression,
                "connect_timeout": 120,
                "timeout": min(
                    7200,
                    120 + scenario.clients // 5 + drain_s + total_rounds * round_timeout,
                ),
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
            "presenceFramesPerClient": _num(_get(raw, "presence", "perClientMean")),
            "connectPerSec": _num(_get(raw, "connect", "perSec")),
            "triggerCallP99Ms": _median([_get(r, "trigger", "callMs", "p99") for r in measured]),
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
        load = peer_driver.hold_users_online(
            server.base_url,
            server.pid,
            scenario.user_range,
            clients=scenario.clients,
            concurrency=scenario.concurrency,
            quiet_ms=scenario.quiet_ms,
            secret=SECRET,
            cpu=self.cpu,
            ready_timeout=3600.0,
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
            "presenceFramesPerClient": _num(_get(raw, "presence", "perClientMean")),
        }
        return metrics, raw

    def stop_all(self) -> None:
        """Stop any idle load generator still holding sockets (after an error or Ctrl-C)."""
        for load in list(self.idle_loads):
            load.stop()
        self.idle_loads.clear()
