"""What an idle connection keeps alive in `huddle serve`: a census of objects per connection.

    .venv/bin/python -m bench.memory_census --users 2000 [--top 40] [--huddle-env NAME=VALUE]

Seeds the bench layout, starts one Huddle server as `huddle bench` does with
`bench/census/sitecustomize.py` loaded, counts its objects (SIGUSR1), holds N
distinct users' sockets open (the load generator's idle mode, presence as
shipped), counts again, and prints the difference per connection by kind of
object, largest first, beside the RSS per connection; then closes them and
says how many objects only the cyclic collector could free (reference cycles
left by closed connections: none since accel uvicorn override 9). How the
memory rows of docs/benchmarks.md were found. `--huddle-env PYTHONPATH=<worktree>/src` measures
another version of the code (the census directory is put in front).
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

from bench import peer_driver, servers
from bench.seed import Layout

CENSUS_DIR = Path(__file__).with_name("census")


def _wait_for(path: Path, wait: float = 60.0) -> str:
    """The text the server writes to `path` on a signal (in one go), once it is there."""
    deadline = time.monotonic() + wait
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing at {path}: did the server load {CENSUS_DIR}?")
        time.sleep(0.2)
    time.sleep(0.5)  # written in one go; let it finish
    return path.read_text()


def _read(path: Path) -> dict[str, tuple[int, int]]:
    table: dict[str, tuple[int, int]] = {}
    for line in _wait_for(path).splitlines():
        count, size, kind = line.split("\t", 2)
        table[kind] = (int(count), int(size))
    return table


def difference(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], connections: int
) -> list[tuple[float, float, str]]:
    """(bytes, objects, kind) per connection, largest first."""
    rows = []
    for kind in before.keys() | after.keys():
        count, size = after.get(kind, (0, 0))
        count0, size0 = before.get(kind, (0, 0))
        rows.append(((size - size0) / connections, (count - count0) / connections, kind))
    return sorted(rows, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--huddle-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="huddle-census-"))
    census = work / "census"
    env = dict(item.split("=", 1) for item in args.huddle_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CENSUS_DIR), env.get("PYTHONPATH")]))
    env["HUDDLE_CENSUS"] = str(census)
    layout = Layout(big_teams=(args.users,))
    template, _ = servers.make_template(work, args.users, layout)
    running = servers.start(
        "huddle",
        template=template,
        work_dir=work,
        options=servers.ServerOptions(extra_env=tuple(env.items())),
        cpu=0,
        log_dir=work,
    )
    try:
        time.sleep(1)
        empty = peer_driver.read_proc_stats(running.pid)
        os.kill(running.pid, signal.SIGUSR1)
        before = _read(Path(f"{census}.1"))
        load = peer_driver.hold_users_online(
            running.base_url,
            running.pid,
            f"1-{args.users}",
            clients=args.users,
            concurrency=100,
            quiet_ms=2500,
            secret=servers.SECRET,
            cpu=1,
        )
        try:
            time.sleep(2)
            loaded = peer_driver.read_proc_stats(running.pid)
            os.kill(running.pid, signal.SIGUSR1)
            after = _read(Path(f"{census}.2"))
        finally:
            load.finish(timeout=60)
        # What the closed connections left that only the cyclic collector frees.
        time.sleep(3)
        os.kill(running.pid, signal.SIGUSR2)
        left = _wait_for(Path(f"{census}.collected")).strip()
    finally:
        running.stop()
    rows = difference(before, after, args.users)
    rss = (loaded.rss_bytes - empty.rss_bytes) / args.users / 1024
    print(f"{args.users} idle connections: RSS {rss:.1f} KB per connection")
    tracked = sum(r[1] for r in rows)
    print(
        f"objects the collector tracks: {tracked:.0f} "
        f"({sum(r[0] for r in rows) / 1024:.1f} KB) per connection"
    )
    print(f"after they closed, a full collection found {left} unreachable objects (cycles)")
    for size, count, kind in rows[: args.top]:
        print(f"{size:8.0f} B {count:6.2f}  {kind[:140]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
