"""Count the instructions `huddle serve` spends per cold handshake, with callgrind.

    .venv/bin/python -m bench.callgrind_storm --users 300 --out /tmp/storm.cg

Instruction counts do not move with the machine's load the way CPU time and
rates do (other processes on the same cores, frequency changes), so two
versions of the code can be compared on a busy shared machine. The server
runs under `valgrind --tool=callgrind` with instrumentation off until the
users start to connect; N distinct users of one team then connect (a few at a
time, all staying, presence as shipped) and the counts are dumped once every
user is online and the presence windows have closed. Prints the total per
handshake (callgrind sees CPython's C functions, not Python's: py-spy,
`bench/profile_storm.py`, says where in Python the time goes). Needs Debian's
`valgrind`. `--huddle-env NAME=VALUE` passes a setting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import peer_driver, servers
from bench.seed import Layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--huddle-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="keep the callgrind output here")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="huddle-callgrind-"))
    try:
        layout = Layout(big_teams=(args.users,))
        template, _ = servers.make_template(work, args.users, layout)
        data_dir = work / "server"
        data_dir.mkdir()
        shutil.copyfile(template.database, data_dir / servers.DB_NAME)
        port = peer_driver.free_port()
        options = servers.ServerOptions(
            extra_env=tuple(tuple(i.split("=", 1)) for i in args.huddle_env)  # type: ignore[misc]
        )
        env = {**os.environ, **servers.huddle_env(data_dir, options)}
        out = work / "callgrind.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             servers.huddle_executable(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            peer_driver.wait_http_ready(f"http://127.0.0.1:{port}/healthz", timeout=600)
            subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True)
            started = time.monotonic()
            report = peer_driver.run_loadgen(
                "storm",
                {
                    "url": f"http://127.0.0.1:{port}",
                    "phases": f"1-{args.users}",
                    "concurrency": args.concurrency,
                    "quiet": 5000,
                    "connect_timeout": 600,
                    "timeout": 3600,
                },
                secret=servers.SECRET,
            )
            subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True)
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(60)
        phase = (report.get("phases") or [{}])[0]
        done = int((phase.get("handshakes") or {}).get("succeeded") or 0)
        dump = work / "callgrind.out.1"  # the `-d` dump (the one at exit is `callgrind.out`)
        total = _total(dump)
        print(f"{done} handshakes in {elapsed:.0f} s under callgrind")
        print(f"{total:,} instructions, {total / max(done, 1):,.0f} per handshake")
        if args.out is not None:
            shutil.copyfile(dump, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _total(dump: Path) -> int:
    """The instructions a callgrind dump counted (its `summary:` or `totals:` line)."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
