"""The storm, A/B: Huddle variants and the Node peer alternated round by round.

    .venv/bin/python -m bench.storm_ab --rounds 3 --node \\
        --variant base:PYTHONPATH=/tmp/base/src --variant new:

On this shared host the storm's CPU per handshake moves by ±15 % from one
run to the next (docs/benchmarks.md, "Status"), more than most single changes
are worth; one `huddle bench` run compares against Node but not against the
code before a change. This runs the storm's phases (`--users`, and
`--phase2` more users of a second team while the first stay) on a fresh
server per round for each variant in turn, and prints each round's figures
and each variant's medians, so versions are compared under the same
conditions. A variant is `label:NAME=VALUE,...`: settings for `huddle serve`,
where `PYTHONPATH=<a checkout>/src` runs that checkout's code (a `git
worktree` of the commit before a change). `--node` adds the peer.

Per phase: handshakes/s, server CPU µs per handshake over the connect window
and until the wire went quiet, p99 open→`authenticated`, presence frames per
online client; per round, the server's user and system CPU over the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import peer_driver, servers
from bench.seed import Layout


def parse_variant(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`label:NAME=VALUE,NAME=VALUE` as (label, settings); `node` is the peer."""
    label, _, settings = text.partition(":")
    if not label:
        raise argparse.ArgumentTypeError(f"a variant needs a label: {text!r}")
    pairs = []
    for item in filter(None, settings.split(",")):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"not NAME=VALUE: {item!r}")
        pairs.append((name, value))
    return label, tuple(pairs)


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """User and system CPU of a process, in clock ticks (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def run_round(
    label: str,
    settings: tuple[tuple[str, str], ...],
    *,
    template: servers.Template,
    work: Path,
    phases: str,
    concurrency: int,
    quiet_ms: int,
) -> dict[str, Any]:
    """One storm on a fresh server: the generator's phases and the server's CPU split."""
    name: servers.ServerName = "node" if label == "node" else "huddle"
    options = servers.ServerOptions(extra_env=settings)
    running = servers.start(
        name, template=template, work_dir=work, options=options, cpu=0, log_dir=work
    )
    try:
        user0, system0 = _cpu_ticks(running.pid)
        report = peer_driver.run_loadgen(
            "storm",
            {
                "url": running.base_url,
                "phases": phases,
                "concurrency": concurrency,
                "server_pid": running.pid,
                "quiet": quiet_ms,
                "timeout": 900,
            },
            secret=servers.SECRET,
            cpu=1,
        )
        user1, system1 = _cpu_ticks(running.pid)
    finally:
        running.stop()
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    rows = []
    for phase in report.get("phases") or []:
        handshakes = phase["handshakes"]
        rows.append(
            {
                "users": phase["users"],
                "handshakesPerSec": handshakes["perSec"],
                "failures": handshakes["failures"],
                "p99Ms": handshakes["latencyMs"]["p99"],
                "cpuUsPerHandshake": phase["server"]["cpuUsPerHandshake"],
                "cpuUsPerHandshakeUntilQuiet": phase["serverUntilQuiet"]["cpuUsPerHandshake"],
                "presencePerOnlineClient": phase["presence"]["perOnlineClient"],
            }
        )
    return {
        "variant": label,
        "phases": rows,
        "userMs": round((user1 - user0) * tick_ms),
        "systemMs": round((system1 - system0) * tick_ms),
    }


def medians(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per variant and phase, the median of each figure over the rounds."""
    out: dict[str, list[dict[str, Any]]] = {}
    for label in dict.fromkeys(r["variant"] for r in results):
        rounds = [r["phases"] for r in results if r["variant"] == label]
        phases = []
        for index, first in enumerate(rounds[0]):
            rows = [phases_[index] for phases_ in rounds if len(phases_) > index]
            phases.append(
                {
                    "users": first["users"],
                    **{
                        key: statistics.median(float(row[key]) for row in rows)
                        for key in (
                            "handshakesPerSec",
                            "p99Ms",
                            "cpuUsPerHandshake",
                            "cpuUsPerHandshakeUntilQuiet",
                        )
                    },
                }
            )
        out[label] = phases
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=parse_variant, action="append", default=[])
    parser.add_argument("--node", action="store_true", help="the Node peer as one more variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=2000, help="phase 1: one team")
    parser.add_argument("--phase2", type=int, default=0, help="phase 2: a second team")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--quiet-ms", type=int, default=2500)
    parser.add_argument("--out", type=Path, default=None, help="write every round as JSON")
    args = parser.parse_args(argv)
    variants = list(args.variant) or [("huddle", ())]
    if args.node:
        variants.append(("node", ()))
    teams = (args.users, args.phase2) if args.phase2 else (args.users,)
    phases = f"1-{args.users}"
    if args.phase2:
        phases += f",{args.users + 1}-{args.users + args.phase2}"
    work = Path(tempfile.mkdtemp(prefix="huddle-storm-ab-"))
    results: list[dict[str, Any]] = []
    try:
        template, _ = servers.make_template(work, sum(teams), Layout(big_teams=teams))
        for round_ in range(1, args.rounds + 1):
            for label, settings in variants:
                result = run_round(
                    label,
                    settings,
                    template=template,
                    work=work,
                    phases=phases,
                    concurrency=args.concurrency,
                    quiet_ms=args.quiet_ms,
                )
                results.append(result)
                for phase in result["phases"]:
                    print(
                        f"round {round_} {label:>8} users {phase['users']}: "
                        f"{phase['handshakesPerSec']:,.0f} handshakes/s, "
                        f"{phase['cpuUsPerHandshake']:.0f} µs CPU per handshake "
                        f"({phase['cpuUsPerHandshakeUntilQuiet']:.0f} until quiet), "
                        f"p99 {phase['p99Ms']} ms, "
                        f"presence {phase['presencePerOnlineClient']} frames per client, "
                        f"failures {phase['failures'] or 0}",
                        flush=True,
                    )
                print(
                    f"round {round_} {label:>8} server CPU: user {result['userMs']} ms, "
                    f"system {result['systemMs']} ms",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = medians(results)
    print("medians:")
    for label, rows in summary.items():
        for row in rows:
            print(
                f"{label:>8} users {row['users']}: {row['handshakesPerSec']:,.0f} handshakes/s, "
                f"{row['cpuUsPerHandshake']:.0f} µs CPU per handshake, p99 {row['p99Ms']:.1f} ms"
            )
    if args.out is not None:
        args.out.write_text(json.dumps({"rounds": results, "medians": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
