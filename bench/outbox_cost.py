"""What one outbox event costs on SQLite, nothing connected (docs/benchmarks.md).

    .venv/bin/python -m bench.outbox_cost --events 2000 --runs 7

Writes `task_updated` events one unit of work each, as the bench trigger does,
through a fresh database and the real runtime (no server, no sockets), and
prints per variant the median over runs of µs per event and the unit
durations' p50, p99.9 and max (a WAL checkpoint run inside a commit shows as
a multi-millisecond p99.9). Variants, each alone and in this order:

- `now`: the code as it is;
- `orm-session`: each unit opens its ORM session (as every unit did before
  events-only units wrote on a plain connection);
- `checkpoint-in-commit`: no checkpoint thread, SQLite's default
  `wal_autocheckpoint` (1,000 pages) on the serving connections;
- `schema-0001`: the database at migration 0001 (a BIGINT `events.id` with
  its own index, a full `subject_user_id` index).

Run it pinned to one core (`taskset -c 0`) on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("now", "orm-session", "checkpoint-in-commit", "schema-0001")


async def _measure(variant: str, events: int, data_dir: Path) -> tuple[float, list[float]]:
    from huddle.config import Settings
    from huddle.db import checkpoint, session
    from huddle.db.migrate import upgrade
    from huddle.runtime import Runtime
    from huddle.services.bench import _task

    if variant == "checkpoint-in-commit":
        checkpoint.Checkpointer.start = lambda self: None  # type: ignore[method-assign]
        session.SAFETY_NET_PAGES = 1000  # SQLite's default  # type: ignore[misc]
    settings = Settings(huddle_data_dir=data_dir, jwt_secret="x" * 40, app_env="development")
    upgrade(settings, revision="0001" if variant == "schema-0001" else "head")
    runtime = await Runtime.start(settings)
    try:
        db = runtime.db
        body: dict[str, Any] = {"changes": ["status"], "sentAt": 0}
        durations: list[float] = []
        started = time.perf_counter()
        for index in range(events + 200):  # the first 200 warm up
            if index == 200:
                durations.clear()
                started = time.perf_counter()
            begun = time.perf_counter()
            async with db.unit() as unit:
                if variant == "orm-session":
                    unit.session  # noqa: B018 - opening it is the point
                await unit.emit(
                    "task_updated",
                    team_id=1,
                    actor_id=1,
                    body={**body, "task": _task(1, index, "x" * 100, "")},
                )
            durations.append(time.perf_counter() - begun)
        per_event = (time.perf_counter() - started) / events
    finally:
        await runtime.stop()
    return per_event, durations


def _one(variant: str, events: int) -> None:
    """One run in this process (a child of `main`), printed as a line of numbers."""
    with tempfile.TemporaryDirectory(prefix="huddle-outbox-") as tmp:
        per_event, durations = asyncio.run(_measure(variant, events, Path(tmp)))
    durations.sort()
    p999 = durations[min(len(durations) - 1, int(len(durations) * 0.999))]
    print(per_event * 1e6, durations[len(durations) // 2] * 1e6, p999 * 1e6, durations[-1] * 1e6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _one(args.child, args.events)
        return 0
    import subprocess

    variants = [v for v in args.variants.split(",") if v]
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    results: dict[str, list[list[float]]] = {v: [] for v in variants}
    for _ in range(args.runs):  # variants interleaved, so a slow minute hits them all
        for variant in variants:
            command = [sys.executable, "-m", "bench.outbox_cost", "--child", variant]
            out = subprocess.run(
                [*command, "--events", str(args.events)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "LOG_LEVEL": "warning"},
            )
            results[variant].append([float(x) for x in out.stdout.split()[-4:]])
    print(f"{args.events} events per run, medians of {args.runs} runs")
    print(f"{'variant':22} {'µs/event':>9} {'unit p50':>9} {'p99.9':>9} {'max':>9}")
    for variant, runs in results.items():
        columns = [statistics.median(run[i] for run in runs) for i in range(4)]
        print(f"{variant:22} " + " ".join(f"{value:9.0f}" for value in columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
