"""Count the instructions `huddle serve` spends per `GET /api/users/{id}/teams`, with callgrind.

    .venv/bin/python -m bench.callgrind_rest --requests 2000 --out /tmp/rest.cg

The REST counterpart of `bench/callgrind_storm.py`: instruction counts do not
move with the machine's load the way requests/s and CPU time do, so two
versions of the code can be compared on a busy shared machine. The server
(SQLite, the settings of `bench/rest.py`) runs under `valgrind
--tool=callgrind` with instrumentation off; a user in 20 teams is seeded
through the API and the route is warmed up; then exactly `--requests` GETs
are sent over `--connections` keep-alive connections (by the Node.js load
generator) and the counts are dumped. Prints the total per request.
`--profile` runs py-spy on the server instead of valgrind and prints where in
Python the time goes (`bench/profile_storm.py`'s summary). `--huddle-env
NAME=VALUE` passes a setting (e.g. `ACCEL=off`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import peer_driver
from bench.callgrind_storm import _total
from bench.profile_storm import summarize
from bench.rest import HTTP_LOADGEN, SECRET, _huddle, seed

DRIVE_TIMEOUT = 1800
"""Seconds one drive may take, valgrind's slowness included: a server that died under it
left the load generator retrying for ever."""


def _drive(url: str, token: str, requests: int, connections: int) -> int:
    """About `requests` GETs over `connections` keep-alive connections from the Node.js
    load generator; the number of answers (each one counted, so slightly more than
    `requests` when the last ones were in flight)."""
    result = subprocess.run(
        [peer_driver.node_executable(), str(HTTP_LOADGEN), "--url", url, "--bearer", token,
         "--connections", str(connections), "--warmup", "0", "--duration", "3600",
         "--max-requests", str(requests)],
        check=True, capture_output=True, timeout=DRIVE_TIMEOUT,
    )  # fmt: skip
    report = json.loads(result.stdout)
    if set(report["statuses"]) != {"200"}:
        raise RuntimeError(f"unexpected answers: {report['statuses']}")
    return int(report["requests"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--huddle-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--profile", action="store_true", help="py-spy instead of callgrind")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None, help="keep the callgrind output here")
    parser.add_argument("--raw", type=Path, default=None, help="keep py-spy's raw samples here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not args.profile and shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="huddle-callgrind-rest-"))
    try:
        env = {
            **os.environ,
            "APP_ENV": "development",
            "HUDDLE_DATA_DIR": str(work),
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "warning",
            "RATE_LIMIT_ENABLED": "false",
            **dict(item.split("=", 1) for item in args.huddle_env),
        }
        subprocess.run([_huddle(), "migrate"], env=env, check=True, capture_output=True)
        port = peer_driver.free_port()
        out = work / "callgrind.out"
        serve = [_huddle(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        if not args.profile:
            serve = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                     f"--callgrind-out-file={out}", *serve]  # fmt: skip
        server = subprocess.Popen(
            serve, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            base = f"http://127.0.0.1:{port}"
            peer_driver.wait_http_ready(f"{base}/healthz", timeout=600, process=server)
            user_id, token = seed(base, args.teams)
            url = f"{base}/api/users/{user_id}/teams"
            _drive(url, token, args.warmup, args.connections)
            raw = work / "pyspy.txt"
            if args.profile:
                spy_run = subprocess.Popen(
                    [spy, "record", "--pid", str(server.pid), "--rate", str(args.rate),
                     "--format", "raw", "--output", str(raw), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1)
            else:
                subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True)
            started = time.monotonic()
            done = _drive(url, token, args.requests, args.connections)
            elapsed = time.monotonic() - started
            if args.profile:
                spy_run.send_signal(2)
                spy_run.wait(60)
            else:
                subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True)
        finally:
            server.terminate()
            server.wait(60)
        print(f"{done} requests answered 200 in {elapsed:.1f} s")
        if args.profile:
            print(summarize(raw, args.out))
            if args.raw is not None:
                shutil.copyfile(raw, args.raw)
            return 0
        dump = work / "callgrind.out.1"
        total = _total(dump)
        print(f"{total:,} instructions, {total / max(done, 1):,.0f} per request")
        if args.out is not None:
            shutil.copyfile(dump, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
