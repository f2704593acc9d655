"""Profile `huddle serve` under the storm scenario with py-spy (docs/benchmarks.md).

    .venv/bin/python -m bench.profile_storm --users 2000 --out /tmp/storm.txt

Seeds the bench layout, starts one Huddle server pinned to CPU 0 exactly as
`huddle bench` does, records it with py-spy (`pip install py-spy`) while the
load generator brings N distinct users online 100 at a time (all staying), and
prints the functions with the most samples: own time, and inclusive time of
Huddle's and the libraries' frames. `--huddle-env NAME=VALUE` passes a setting.
`--online 2000 --users 3000` profiles the storm's phase 2: 2,000 users of one
team are brought online first (not profiled), then 3,000 of a second team.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import peer_driver, servers
from bench.seed import Layout

OWN_LINES = 30
INCLUSIVE_LINES = 120
INTERESTING = ("huddle", "socketio", "engineio", "sqlalchemy", "uvicorn", "websockets", "jwt")


def summarize(raw: Path, out: Path | None) -> str:
    """Own and inclusive sample shares of py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples", "--- own"]
    lines += [f"{100 * n / total:5.1f}% {f}" for f, n in own.most_common(OWN_LINES)]
    lines.append("--- inclusive")
    shown = 0
    for frame, n in inclusive.most_common():
        if any(name in frame for name in INTERESTING):
            lines.append(f"{100 * n / total:5.1f}% {frame}")
            shown += 1
            if shown >= INCLUSIVE_LINES:
                break
    text = "\n".join(lines)
    if out is not None:
        out.write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--online",
        type=int,
        default=0,
        help="users of a first team held online (not profiled) before the storm, "
        "whose users are then a second team: the storm's phase 2",
    )
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--huddle-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="where to write the summary")
    parser.add_argument("--raw", type=Path, default=None, help="keep py-spy's raw samples here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    work = Path(tempfile.mkdtemp(prefix="huddle-profile-"))
    try:
        teams = (args.online, args.users) if args.online else (args.users,)
        layout = Layout(big_teams=teams)
        template, _ = servers.make_template(work, sum(teams), layout)
        first = args.online + 1
        extra = tuple(tuple(item.split("=", 1)) for item in args.huddle_env)
        running = servers.start(
            "huddle",
            template=template,
            work_dir=work,
            options=servers.ServerOptions(extra_env=extra),  # type: ignore[arg-type]
            cpu=0,
            log_dir=work,
        )
        online = None
        if args.online:
            online = peer_driver.hold_users_online(
                running.base_url,
                running.pid,
                f"1-{args.online}",
                clients=args.online,
                concurrency=args.concurrency,
                quiet_ms=1000,
                secret=servers.SECRET,
                cpu=1,
            )
        raw = work / "profile.raw"
        recorder = subprocess.Popen(
            [spy, "record", "-p", str(running.pid), "-r", str(args.rate), "--format", "raw",
             "-o", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            report = peer_driver.run_loadgen(
                "storm",
                {
                    "url": running.base_url,
                    "phases": f"{first}-{first + args.users - 1}",
                    "concurrency": args.concurrency,
                    "server_pid": running.pid,
                    "quiet": 1000,
                    "timeout": 900,
                },
                secret=servers.SECRET,
                cpu=1,
            )
        finally:
            recorder.send_signal(2)
            recorder.wait(30)
            if online is not None:
                online.finish(timeout=60)
            running.stop()
        phase = (report.get("phases") or [{}])[0]
        print(json.dumps({"handshakes": phase.get("handshakes"), "server": phase.get("server")}))
        print(summarize(raw, args.out))
        if args.raw is not None:
            shutil.copyfile(raw, args.raw)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
