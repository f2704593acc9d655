"""`huddle bench`: Huddle against the Node.js Socket.IO peer, alternating, in one run (SPEC §8).

For each round, each scenario runs on a fresh Node peer and then on a fresh
`huddle serve` (A B A B …), the server pinned to one CPU and the load
generator to another, all on loopback. At the end it prints the medians and
the Huddle/Node ratios, writes JSON (bench/results/<UTC time>.json unless
--out) and a PNG chart of the ratios beside it.

    huddle bench                       # the full run: 3 rounds, 2,000-10,000 clients
    huddle bench --quick               # a smoke run of a few minutes
    huddle bench --scenarios fanout,broadcast --rooms 2000 --rounds 5
    huddle bench --scenarios storm,rest-fanout --quick

Every client is a distinct user with presence on, as Huddle ships it: a room
of 2,000 is users 1-2,000 of one team (`bench.seed.Layout`), and the load
generator counts the `presence_changed` frames each client receives.

Every process it starts is stopped by PID, also on Ctrl-C or an error; see
docs/benchmarks.md for what each number means and what limits it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich_argparse import RichHelpFormatter

from bench import peer_driver, report, servers
from bench.scenarios import WARMUP_HANDSHAKES, Runner, Scenario
from bench.seed import Layout
from bench.servers import SERVERS, Running, ServerName

RESULTS_DIR: Final = peer_driver.BENCH_DIR / "results"
SCENARIO_KINDS: Final = (
    "handshake",
    "reject",
    "storm",
    "fanout",
    "rest-fanout",
    "broadcast",
    "idle",
    "compression",
    "rest",
)
MAX_CLIENTS: Final = 10_000


@dataclass(frozen=True)
class Sizes:
    rounds: int
    handshake_clients: int
    reject_clients: int
    rooms: tuple[int, ...]
    count: int
    fanout_rounds: int
    broadcast_clients: int
    broadcast_rounds: int
    idle: tuple[int, ...]
    compression_clients: int
    compression_count: int
    rest_seconds: float
    settle_ms: int
    storm: tuple[int, ...]
    rest_fanout_clients: int
    rest_fanout_count: int
    editors: int
    quiet_ms: int


FULL: Final = Sizes(
    rounds=3,
    handshake_clients=2000,
    reject_clients=2000,
    rooms=(100, 2000),
    count=50,
    fanout_rounds=3,
    broadcast_clients=2000,
    broadcast_rounds=5,
    idle=(2000, 5000, 10_000),
    compression_clients=2000,
    compression_count=10,
    rest_seconds=10,
    settle_ms=500,
    storm=(2000, 3000),
    rest_fanout_clients=2000,
    rest_fanout_count=50,
    editors=10,
    quiet_ms=2500,
)
QUICK: Final = Sizes(
    rounds=1,
    handshake_clients=300,
    reject_clients=300,
    rooms=(100, 500),
    count=20,
    fanout_rounds=2,
    broadcast_clients=500,
    broadcast_rounds=3,
    idle=(500, 1000),
    compression_clients=300,
    compression_count=10,
    rest_seconds=3,
    settle_ms=200,
    storm=(300, 450),
    rest_fanout_clients=300,
    rest_fanout_count=20,
    editors=10,
    quiet_ms=1000,
)


# --- command line ------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(not 1 <= v <= MAX_CLIENTS for v in values):
        raise argparse.ArgumentTypeError(f"each value must be between 1 and {MAX_CLIENTS}")
    return values


def _names(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = sorted(set(names) - set(allowed))
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return names

    return parse


def _positive(upper: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not 1 <= value <= upper:
            raise argparse.ArgumentTypeError(f"must be between 1 and {upper}")
        return value

    return parse


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.replace("_", "").isalnum() or not name.isupper():
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with an upper-case name, got {text!r}"
        )
    return name, value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="huddle bench",
        usage="huddle bench [OPTIONS]",
        description=(
            "Benchmark Huddle against the Node.js Socket.IO peer: the scenarios, the "
            "machine and how to read the figures are in docs/benchmarks.md."
        ),
        epilog="Sizes default to the full run (or --quick); the options above override them.",
        # The look of the rest of the `huddle` command's help (typer's, also rich).
        formatter_class=RichHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes and 1 round (a few minutes)")
    p.add_argument("--rounds", type=_positive(50), help="A/B rounds (full: 3)")
    p.add_argument(
        "--scenarios",
        type=_names(SCENARIO_KINDS),
        default=SCENARIO_KINDS,
        help=f"comma-separated subset of {', '.join(SCENARIO_KINDS)}",
    )
    p.add_argument("--servers", type=_names(SERVERS), default=SERVERS, help="node,huddle")
    p.add_argument(
        "--handshake-clients", type=_positive(MAX_CLIENTS), help="full: 2000, quick: 300"
    )
    p.add_argument(
        "--reject-clients",
        type=_positive(MAX_CLIENTS),
        help="expired-token handshakes (full: 2000, quick: 300)",
    )
    p.add_argument("--rooms", type=_ints, help="fan-out room sizes (full: 100,2000)")
    p.add_argument("--count", type=_positive(10_000), help="events per fan-out round (full: 50)")
    p.add_argument(
        "--size",
        type=_positive(65_536),
        default=300,
        help="event frame bytes; a full task makes ~380 at least (default 300)",
    )
    p.add_argument(
        "--fanout-rounds",
        type=_positive(100),
        help="measured rounds per fan-out run, after 1 warm-up (full: 3)",
    )
    p.add_argument(
        "--broadcast-clients",
        type=_positive(MAX_CLIENTS),
        help="clients of the one-broadcast latency test (full: 2000)",
    )
    p.add_argument(
        "--broadcast-rounds",
        type=_positive(100),
        help="single broadcasts measured, after 2 warm-ups (full: 5)",
    )
    p.add_argument("--idle", type=_ints, help="idle connection counts (full: 2000,5000,10000)")
    p.add_argument(
        "--compression-clients",
        type=_positive(MAX_CLIENTS),
        help="room of the deflate on/off fan-out (full: 2000)",
    )
    p.add_argument(
        "--compression-count",
        type=_positive(10_000),
        help="events per round of the deflate on/off fan-out (full: 10)",
    )
    p.add_argument(
        "--storm",
        type=_ints,
        help="users of each storm phase, each phase a team of its own (full: 2000,3000)",
    )
    p.add_argument(
        "--storm-concurrency",
        type=_positive(1000),
        default=100,
        help="connection attempts in flight during the storm (default 100)",
    )
    p.add_argument(
        "--rest-fanout-clients",
        type=_positive(MAX_CLIENTS),
        help="online members of the team REST edits fan out to (full: 2000, quick: 300)",
    )
    p.add_argument(
        "--rest-fanout-count",
        type=_positive(10_000),
        help="REST edits per round (full: 50, quick: 20)",
    )
    p.add_argument(
        "--editors",
        type=_positive(100),
        help="users editing at once in the concurrent REST variant (default 10)",
    )
    p.add_argument(
        "--quiet-ms",
        type=_positive(60_000),
        help="after connecting, wait until no event frame came for this long; keep it above "
        "Huddle's longest presence window, 2 s (full: 2500, quick: 1000)",
    )
    p.add_argument(
        "--users",
        type=_positive(MAX_CLIENTS),
        default=None,
        help="cycle this many users in rooms and idle sockets instead of one per client "
        "(older runs used 100; default: every client a distinct user)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive(1000),
        default=50,
        help="connection attempts in flight at once (default 50)",
    )
    p.add_argument(
        "--rest-seconds", type=float, help="duration of each REST run (full: 10, quick: 3)"
    )
    p.add_argument(
        "--settle-ms",
        type=_positive(60_000),
        help="pause before each fan-out round; idle settles 2x/4x this (full: 500)",
    )
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/<time>.json)")
    p.add_argument("--chart", type=Path, help="PNG path (default: the JSON path, .png)")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead")
    p.add_argument(
        "--huddle-env",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Huddle setting for its servers (repeatable), e.g. to compare code paths",
    )
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to")
    p.add_argument(
        "--loadgen-cpu",
        type=int,
        default=1,
        help="CPU of the load generator and this harness",
    )
    p.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' logs (path in the JSON)"
    )
    return p


def resolve_sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL

    def pick(name: str) -> Any:
        value = getattr(args, name)
        return getattr(base, name) if value is None else value

    rest_seconds = pick("rest_seconds")
    if not 1 <= float(rest_seconds) <= 600:
        raise SystemExit("huddle bench: --rest-seconds must be between 1 and 600")
    return Sizes(
        rounds=pick("rounds"),
        handshake_clients=pick("handshake_clients"),
        reject_clients=pick("reject_clients"),
        rooms=pick("rooms"),
        count=pick("count"),
        fanout_rounds=pick("fanout_rounds"),
        broadcast_clients=pick("broadcast_clients"),
        broadcast_rounds=pick("broadcast_rounds"),
        idle=pick("idle"),
        compression_clients=pick("compression_clients"),
        compression_count=pick("compression_count"),
        rest_seconds=float(rest_seconds),
        settle_ms=pick("settle_ms"),
        storm=pick("storm"),
        rest_fanout_clients=pick("rest_fanout_clients"),
        rest_fanout_count=pick("rest_fanout_count"),
        editors=pick("editors"),
        quiet_ms=pick("quiet_ms"),
    )


MIN_MEASURED_MESSAGES = 50_000
"""Messages a fan-out run measures at least (server CPU comes in 10 ms ticks)."""


def fanout_rounds(requested: int, messages_per_round: int, minimum: int) -> int:
    """Measured rounds of a fan-out: as requested, more for small rooms.

    A room of 100 gets 5,000 messages a round, a few ticks of server CPU; ten
    such rounds bring the tick rounding under ~5 % (room 2,000: as requested).
    `minimum` is the messages to measure at least (0 for `--quick`).
    """
    if requested <= 0 or messages_per_round <= 0:
        return requested
    return max(requested, -(-minimum // messages_per_round))


def layout_for(sizes: Sizes) -> Layout:
    """Who is in which team, the same for every scenario of a run (and for both servers).

    Team 1 is big enough for every one-team scenario (rooms, broadcast, REST
    fan-out, compression) and the storm's first phase; each later storm phase
    gets a team of its own (2, 3, …). Any user past them is in one more team,
    so that 10,000 idle sockets are 2,000 + 3,000 + 5,000 people of three teams.
    """
    team_one = max(
        sizes.storm[0],
        *sizes.rooms,
        sizes.broadcast_clients,
        sizes.compression_clients,
        sizes.rest_fanout_clients,
    )
    return Layout(big_teams=(team_one, *sizes.storm[1:]))


def needed_users(scenarios: Sequence[Scenario], layout: Layout) -> int:
    """Users to seed: every scenario's, the warm-ups' just past them, and every big team."""
    last = [s.first_user + s.users - 1 + WARMUP_HANDSHAKES for s in scenarios]
    last += [b for s in scenarios for _, b in s.phases]
    return max([*last, sum(layout.big_teams)])


def build_scenarios(
    kinds: Sequence[str], sizes: Sizes, args: argparse.Namespace, layout: Layout
) -> list[Scenario]:
    """The measurements of one round, in the order they run.

    Every client is a distinct user (users 1..N; `--users` cycles fewer). The
    rooms are team 1's first N members; the storm's phases are the first
    users of teams 1, 2, ….
    """
    conc, size, quiet = args.concurrency, args.size, sizes.quiet_ms

    def distinct(clients: int) -> int:
        return min(args.users, clients) if args.users else clients

    out: list[Scenario] = []
    if "handshake" in kinds:
        n = sizes.handshake_clients
        for cold in (False, True):
            out.append(
                Scenario(
                    "handshake-cold" if cold else "handshake",
                    "handshake",
                    f"handshake x{n}, {'cold server' if cold else 'warm cache'}",
                    n,
                    distinct(n),
                    concurrency=conc,
                    cold=cold,
                )
            )
    if "reject" in kinds:
        n = sizes.reject_clients
        out.append(
            Scenario(
                "reject", "reject", f"expired-token reject x{n}", n, distinct(n), concurrency=conc
            )
        )
    if "storm" in kinds:
        phases = tuple(
            (layout.first_user_of(k + 1), layout.first_user_of(k + 1) + n - 1)
            for k, n in enumerate(sizes.storm)
        )
        total = sum(sizes.storm)
        out.append(
            Scenario(
                "storm",
                "storm",
                "storm " + " + ".join(f"{n:,}" for n in sizes.storm) + ", cold, all stay",
                total,
                total,
                concurrency=args.storm_concurrency,
                quiet_ms=quiet,
                phases=phases,
                extra={"phaseUsers": [f"{a}-{b}" for a, b in phases]},
            )
        )
    if "fanout" in kinds:
        for room in sizes.rooms:
            out.append(
                Scenario(
                    f"fanout-{room}",
                    "fanout",
                    f"fan-out room {room} ({sizes.count} events)",
                    room,
                    distinct(room),
                    count=sizes.count,
                    size=size,
                    inner_rounds=fanout_rounds(
                        sizes.fanout_rounds,
                        room * sizes.count,
                        0 if args.quick else MIN_MEASURED_MESSAGES,
                    ),
                    concurrency=conc,
                    settle_ms=sizes.settle_ms,
                    quiet_ms=quiet,
                )
            )
    if "rest-fanout" in kinds:
        n = sizes.rest_fanout_clients
        editors = min(sizes.editors, n)
        owner = layout.first_user_of(1)
        for many in (False, True):
            who = tuple(range(owner, owner + editors)) if many else (owner,)
            count = sizes.rest_fanout_count
            if many:
                count = len(who) * max(1, count // len(who))
            out.append(
                Scenario(
                    f"rest-fanout-{n}-{'concurrent' if many else 'sequential'}",
                    "rest-fanout",
                    f"REST PATCH → {n}, "
                    + (f"{len(who)} editors at once" if many else "owner, one at a time")
                    + f" ({count} events; Node: bench trigger)",
                    n,
                    distinct(n),
                    count=count,
                    size=size,
                    inner_rounds=fanout_rounds(
                        sizes.fanout_rounds, n * count, 0 if args.quick else MIN_MEASURED_MESSAGES
                    ),
                    concurrency=conc,
                    settle_ms=sizes.settle_ms,
                    quiet_ms=quiet,
                    editors=len(who),
                    edit_tasks=tuple((u, layout.task_id(u)) for u in who),
                    extra={"editors": len(who), "nodeTrigger": "bench"},
                )
            )
    if "broadcast" in kinds:
        n = sizes.broadcast_clients
        out.append(
            Scenario(
                f"broadcast-{n}",
                "broadcast",
                f"one broadcast → {n}",
                n,
                distinct(n),
                count=1,
                size=size,
                inner_rounds=sizes.broadcast_rounds,
                warmup=2,
                concurrency=conc,
                settle_ms=min(300, sizes.settle_ms),
                quiet_ms=quiet,
            )
        )
    if "idle" in kinds:
        for n in sizes.idle:
            out.append(
                Scenario(
                    f"idle-{n}",
                    "idle",
                    f"idle {n} connections",
                    n,
                    distinct(n),
                    concurrency=conc,
                    settle_ms=sizes.settle_ms,
                    quiet_ms=quiet,
                )
            )
    if "compression" in kinds:
        n, count = sizes.compression_clients, sizes.compression_count
        for on in (True, False):
            state = "on" if on else "off"
            out.append(
                Scenario(
                    f"compression-{state}",
                    "compression",
                    f"fan-out {n} ({count} events), deflate {state}",
                    n,
                    distinct(n),
                    count=count,
                    size=size,
                    inner_rounds=sizes.fanout_rounds,
                    concurrency=conc,
                    settle_ms=sizes.settle_ms,
                    quiet_ms=quiet,
                    compression=on,
                    extra={"pair": "compression-off"} if on else {},
                )
            )
    return out


def with_huddle_env(scenarios: list[Scenario], env: Sequence[tuple[str, str]]) -> list[Scenario]:
    return [replace(s, huddle_env=tuple(env)) for s in scenarios] if env else scenarios


def scenario_json(s: Scenario) -> dict[str, Any]:
    return {
        "key": s.key,
        "kind": s.kind,
        "title": s.title,
        "clients": s.clients,
        "users": s.users,
        "userRange": s.user_range,
        "cold": s.cold,
        "quietMs": s.quiet_ms,
        "phases": [list(p) for p in s.phases],
        "count": s.count,
        "size": s.size,
        "innerRounds": s.inner_rounds,
        "warmup": s.warmup,
        "concurrency": s.concurrency,
        "compression": s.compression,
        "settleMs": s.settle_ms,
        **s.extra,
    }


# --- environment -------------------------------------------------------------------


def scrub_huddle_environment() -> list[str]:
    """Drop Huddle's settings from this process's environment, so servers get only ours.

    A DATABASE_URL, REDIS_URL or JWT_ISSUER in the caller's shell would change
    what is measured (and the load generator reads JWT_ISSUER/JWT_AUDIENCE).
    """
    from pydantic import AliasChoices

    from huddle.config import Settings

    names: set[str] = set()
    for field_name, info in Settings.model_fields.items():
        names.add(field_name.upper())
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
    removed = sorted(name for name in os.environ if name.upper() in names)
    for name in removed:
        del os.environ[name]
    return removed


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpuModel"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memTotalGB"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(Exception):
        info["node"] = subprocess.run(
            [peer_driver.node_executable(), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    return info


def code_hash() -> str:
    """A hash of the code the servers and the load generator run: src/huddle, peer, loadgen."""
    root = peer_driver.BENCH_DIR.parent
    digest = hashlib.sha256()
    for folder, pattern in (
        (root / "src" / "huddle", "*.py"),
        (peer_driver.BENCH_DIR / "peer", "*.js"),
        (peer_driver.BENCH_DIR / "loadgen", "*.js"),
    ):
        for path in sorted(folder.rglob(pattern)):
            with contextlib.suppress(OSError):
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def source_version() -> dict[str, Any]:
    """The commit measured, what differed from it, and a hash of the code actually run.

    Others may edit the tree while a run goes on: comparing the hash at the
    start and the end (and each measurement's) tells whether every round
    measured the same code.
    """
    root = peer_driver.BENCH_DIR.parent
    out: dict[str, Any] = {"codeHash": code_hash()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(root)]
        head = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        out["commit"] = head.stdout.strip() or None
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "src", "bench"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        out["dirty"] = [line[3:] for line in status.stdout.splitlines()]
    return out


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def choose_cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return (cpus[0], cpus[0]) if cpus else (None, None)
    for cpu in (args.server_cpu, args.loadgen_cpu):
        if cpu not in cpus:
            raise SystemExit(f"huddle bench: CPU {cpu} is not available (have {cpus})")
    return args.server_cpu, args.loadgen_cpu


# --- the run -----------------------------------------------------------------------


class Harness:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.server_cpu, self.loadgen_cpu = choose_cpus(args)
        self.runner = Runner(cpu=self.loadgen_cpu)
        self.active: list[Running] = []
        self.measurements: list[dict[str, Any]] = []
        self.errors = 0

    def measure(
        self,
        scenario: Scenario,
        server_name: ServerName,
        round_no: int,
        template: servers.Template,
        work_dir: Path,
    ) -> dict[str, Any]:
        started = time.monotonic()
        record: dict[str, Any] = {
            "round": round_no,
            "scenario": scenario.key,
            "kind": scenario.kind,
            "server": server_name,
            "startedAt": _now(),
            "codeHash": code_hash(),
        }
        server: Running | None = None
        try:
            server = servers.start(
                server_name,
                template=template,
                work_dir=work_dir,
                options=scenario.server_options,
                cpu=self.server_cpu,
                log_dir=work_dir,
            )
            self.active.append(server)
            metrics, raw = self.runner.run(scenario, server)
            record.update(metrics=metrics, ok=bool(raw.get("ok", True)), raw=raw)
        except Exception as exc:  # recorded; the other measurements go on
            self.errors += 1
            record.update(metrics={}, ok=False, error=f"{type(exc).__name__}: {exc}")
            if server is not None:
                record["serverLog"] = _tail(server.process.log_path)
        finally:
            self.runner.stop_all()
            if server is not None:
                server.stop()
                self.active.remove(server)
        record["seconds"] = round(time.monotonic() - started, 1)
        return record

    def measure_rest(self, round_no: int, seconds: float) -> dict[str, Any]:
        from bench import rest

        started = time.monotonic()
        record: dict[str, Any] = {
            "round": round_no,
            "scenario": "rest",
            "kind": "rest",
            "server": "huddle",
            "startedAt": _now(),
            "codeHash": code_hash(),
        }
        try:
            raw = rest.run(seconds, 32, 20, self.server_cpu or 0, self.loadgen_cpu or 0)
            record.update(
                metrics={
                    "requestsPerSecond": raw.get("requestsPerSecond"),
                    "requestsPerSec": raw.get("requestsPerSecond"),
                    "serverCpuSeconds": raw.get("serverCpuSeconds"),
                },
                ok=True,
                raw=raw,
            )
        except Exception as exc:  # recorded; the other measurements go on
            self.errors += 1
            record.update(metrics={}, ok=False, error=f"{type(exc).__name__}: {exc}")
        record["seconds"] = round(time.monotonic() - started, 1)
        return record

    def stop_all(self) -> None:
        self.runner.stop_all()
        for server in list(self.active):
            server.stop()
        self.active.clear()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


@contextlib.contextmanager
def _progress(console: Console, enabled: bool, total: int) -> Iterator[Any]:
    if not enabled:

        class Plain:
            def __init__(self) -> None:
                self.done = 0

            def step(self, text: str) -> None:
                console.print(f"[{self.done}/{total}] {text}", highlight=False)

            def advance(self) -> None:
                self.done += 1

        yield Plain()
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("starting", total=total)

    class Rich:
        def step(self, text: str) -> None:
            progress.update(task, description=text)

        def advance(self) -> None:
            progress.advance(task)

    with progress:
        yield Rich()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    sizes = resolve_sizes(args)
    console = Console(stderr=True)
    layout = layout_for(sizes)
    scenarios = with_huddle_env(
        build_scenarios(args.scenarios, sizes, args, layout), args.huddle_env
    )
    server_names: tuple[ServerName, ...] = tuple(args.servers)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path: Path = args.out or RESULTS_DIR / f"{stamp}.json"
    chart_path: Path = args.chart or out_path.with_suffix(".png")

    saved_environ = dict(os.environ)
    saved_affinity = os.sched_getaffinity(0)
    try:
        return _run(
            args, sizes, layout, scenarios, server_names, out_path, chart_path, stamp, console
        )
    finally:
        # Called in-process (not through the CLI), leave the caller as it was.
        os.environ.clear()
        os.environ.update(saved_environ)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, saved_affinity)


def _run(
    args: argparse.Namespace,
    sizes: Sizes,
    layout: Layout,
    scenarios: list[Scenario],
    server_names: tuple[ServerName, ...],
    out_path: Path,
    chart_path: Path,
    stamp: str,
    console: Console,
) -> int:
    out_console = Console()
    if not out_console.is_terminal:
        out_console = Console(width=170)  # a file or pipe: room for the whole table
    kinds = tuple(args.scenarios)
    scrubbed = scrub_huddle_environment()
    peer_driver.raise_fd_limit()
    peer_driver.ensure_node_deps()  # the load generator is Node too
    harness = Harness(args, console)
    with contextlib.suppress(OSError):
        if harness.loadgen_cpu is not None:
            os.sched_setaffinity(0, {harness.loadgen_cpu})  # keep the server's CPU for it

    rest_rounds = "rest" in kinds and "huddle" in server_names
    total = sizes.rounds * (len(scenarios) * len(server_names) + (1 if rest_rounds else 0))
    users_to_seed = needed_users(scenarios, layout)
    result: dict[str, Any] = {
        "schema": 1,
        "startedAt": _now(),
        "argv": args.argv,
        "machine": machine_info(),
        "source": source_version(),
        "loadavgStart": loadavg(),
        "cpus": {"server": harness.server_cpu, "loadgen": harness.loadgen_cpu},
        "sizes": sizes.__dict__
        | {"rooms": list(sizes.rooms), "idle": list(sizes.idle), "storm": list(sizes.storm)},
        "layout": layout.describe(),
        "servers": list(server_names),
        "scenarios": [scenario_json(s) for s in scenarios],
        "scrubbedEnvironment": scrubbed,
        "huddleEnv": dict(args.huddle_env),
        "measurements": harness.measurements,
    }
    work_dir = Path(tempfile.mkdtemp(prefix="huddle-bench-"))
    interrupted = False
    try:
        console.print(
            f"huddle bench: {len(scenarios)} scenarios x {len(server_names)} servers x "
            f"{sizes.rounds} rounds; seeding {users_to_seed} users …",
            highlight=False,
        )
        template, seed_info = servers.make_template(work_dir, users_to_seed, layout)
        result["seed"] = seed_info
        with _progress(console, not args.no_progress and console.is_terminal, total) as bar:
            for round_no in range(1, sizes.rounds + 1):
                for scenario in scenarios:
                    for name in server_names:
                        bar.step(f"round {round_no}/{sizes.rounds} · {scenario.title} · {name}")
                        record = harness.measure(scenario, name, round_no, template, work_dir)
                        harness.measurements.append(record)
                        if record.get("error"):
                            console.print(
                                f"[red]{scenario.key} on {name} failed:[/] {record['error'][:300]}"
                            )
                        bar.advance()
                if rest_rounds:
                    bar.step(f"round {round_no}/{sizes.rounds} · REST teams list · huddle")
                    harness.measurements.append(harness.measure_rest(round_no, sizes.rest_seconds))
                    bar.advance()
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: stopping every process started[/]")
    except Exception as exc:  # set-up failed (seeding, Node packages): say so, write what we have
        result["fatal"] = f"{type(exc).__name__}: {exc}"
        console.print(f"[red]huddle bench: {result['fatal']}[/]", highlight=False)
    finally:
        harness.stop_all()
        if not args.keep_logs:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            result["workDir"] = str(work_dir)

    scenario_dicts = result["scenarios"] + (
        [{"key": "rest", "kind": "rest", "title": "REST (Huddle only)", "clients": 32}]
        if rest_rounds
        else []
    )
    rows = report.summarize(harness.measurements, scenario_dicts)
    result.update(
        finishedAt=_now(),
        loadavgEnd=loadavg(),
        sourceEnd=source_version(),
        interrupted=interrupted,
        errors=harness.errors,
        summary=rows,
    )
    conditions = (
        f"medians of {sizes.rounds} round(s); {result['machine'].get('nproc')} CPUs, "
        f"load average at start {result['loadavgStart']}"
    )
    title = f"Huddle vs Node peer — {conditions}"
    hashes = {m.get("codeHash") for m in harness.measurements} | {
        result["source"].get("codeHash"),
        result["sourceEnd"].get("codeHash"),
    }
    result["codeChangedDuringRun"] = len(hashes - {None}) > 1
    if result["codeChangedDuringRun"]:
        console.print(
            "[yellow]warning: the code under test changed during the run "
            "(someone edited src/huddle or the peer); rounds may have measured different code[/]"
        )
    if not args.no_chart:
        chart = report.render_chart(rows, chart_path, subtitle=f"{stamp} · {conditions}")
        result["chart"] = str(chart) if chart else None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    report.print_table(rows, out_console, title=title)
    if result.get("chart"):
        console.print(f"chart: {result['chart']}", highlight=False)
    console.print(f"results: {out_path}", highlight=False)
    if interrupted:
        return 130
    return 1 if harness.errors or "fatal" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
