"""A reconnect storm in split mode: `huddle api` + `huddle gateway`, N distinct users at once.

    .venv/bin/python -m bench.split_storm --users 2000 --concurrency 100 [--rounds 3]
    .venv/bin/python -m bench.split_storm --huddle /path/to/other/.venv/bin/huddle  # another build

Seeds the bench layout (all users in one team, `bench.seed`) into SQLite,
starts `huddle api` on a copy and `huddle gateway` with BACKEND_URL pointing
at it, both pinned to CPU 0 (the load generator and this script on CPU 1),
and has the load generator bring the N users online `--concurrency` at a time
(all staying, every cache cold: the gateway is fresh each round). Reports per
round: handshakes/s and latency (load generator), the API's CPU per handshake
(its /proc utime+stime over the storm, until the presence traffic is quiet),
the gateway's CPU per handshake, and the API requests the storm caused, by
route (the API's own `huddle_http_requests_total`). `--huddle` runs another
build's `huddle` (e.g. main's worktree) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench import peer_driver, servers
from bench.main import scrub_huddle_environment
from bench.seed import Layout

SERVER_CPU = 0
LOADGEN_CPU = 1


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_requests(url: str) -> dict[str, int]:
    """The API's request counts by route (every method and status)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts: dict[str, int] = {}
    for route, value in re.findall(
        r'huddle_http_requests_total\{[^}]*route="([^"]+)"[^}]*\} (\S+)', text
    ):
        counts[route] = counts.get(route, 0) + int(float(value))
    return counts


def one_round(
    huddle: str, template: servers.Template, work: Path, users: int, concurrency: int
) -> dict[str, Any]:
    api_dir = Path(tempfile.mkdtemp(prefix="api-", dir=work))
    gateway_dir = Path(tempfile.mkdtemp(prefix="gateway-", dir=work))
    shutil.copyfile(template.database, api_dir / servers.DB_NAME)
    options = servers.ServerOptions()
    api_port, gateway_port = peer_driver.free_port(), peer_driver.free_port()
    api = peer_driver.start_server(
        [huddle, "api", "--host", "127.0.0.1", "--port", str(api_port)],
        name="huddle-api",
        port=api_port,
        health_url=f"http://127.0.0.1:{api_port}/healthz",
        env=servers.huddle_env(api_dir, options),
        cwd=api_dir,
        cpu=SERVER_CPU,
        log_path=work / f"api-{api_port}.log",
        ready_timeout=60.0,
    )
    try:
        gateway_env = {
            **servers.huddle_env(gateway_dir, options),
            "BACKEND_URL": api.base_url,
            "BACKEND_TIMEOUT": "10",  # measure the work, not timeouts on a loaded machine
        }
        gateway = peer_driver.start_server(
            [huddle, "gateway", "--host", "127.0.0.1", "--port", str(gateway_port)],
            name="huddle-gateway",
            port=gateway_port,
            health_url=f"http://127.0.0.1:{gateway_port}/healthz",
            env=gateway_env,
            cwd=gateway_dir,
            cpu=SERVER_CPU,
            log_path=work / f"gateway-{gateway_port}.log",
            ready_timeout=60.0,
        )
        try:
            before = api_requests(api.base_url)
            api_cpu = cpu_seconds(api.pid)
            report = peer_driver.run_loadgen(
                "storm",
                {
                    "url": gateway.base_url,
                    "phases": f"1-{users}",
                    "concurrency": concurrency,
                    "server_pid": gateway.pid,
                    "quiet": 1000,
                    "connect_timeout": 120,
                    "timeout": 900,
                },
                secret=servers.SECRET,
                cpu=LOADGEN_CPU,
            )
            api_cpu = cpu_seconds(api.pid) - api_cpu
            after = api_requests(api.base_url)
        finally:
            peer_driver.stop_process(gateway)
    finally:
        peer_driver.stop_process(api)
        shutil.rmtree(api_dir, ignore_errors=True)
        shutil.rmtree(gateway_dir, ignore_errors=True)
    phase = (report.get("phases") or [{}])[0]
    shakes = phase.get("handshakes") or {}
    succeeded = int(shakes.get("succeeded") or 0)
    requests = {
        route: after.get(route, 0) - before.get(route, 0)
        for route in after
        if after.get(route, 0) != before.get(route, 0) and route != "/metrics"
    }
    return {
        "handshakes": succeeded,
        "failed": int(shakes.get("requested") or 0) - succeeded,
        "handshakesPerSec": shakes.get("perSec"),
        "p50Ms": (shakes.get("latencyMs") or {}).get("p50"),
        "p99Ms": (shakes.get("latencyMs") or {}).get("p99"),
        "apiCpuMsPerHandshake": round(1000 * api_cpu / max(succeeded, 1), 3),
        "gatewayCpuUsPerHandshake": (phase.get("serverUntilQuiet") or {}).get("cpuUsPerHandshake"),
        "apiRequests": requests,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--huddle", default=None, help="the huddle executable (default: this venv's)"
    )
    args = parser.parse_args(argv)
    scrub_huddle_environment()
    peer_driver.raise_fd_limit()
    peer_driver.ensure_node_deps()
    huddle = args.huddle or servers.huddle_executable()
    work = Path(tempfile.mkdtemp(prefix="huddle-split-storm-"))
    try:
        layout = Layout(big_teams=(args.users,))
        template, _ = servers.make_template(work, args.users, layout)
        rounds = []
        for k in range(args.rounds):
            result = one_round(huddle, template, work, args.users, args.concurrency)
            print(json.dumps({"round": k + 1, **result}), flush=True)
            rounds.append(result)
        summary = {
            key: statistics.median(r[key] for r in rounds if r[key] is not None)
            for key in ("handshakesPerSec", "p99Ms", "apiCpuMsPerHandshake")
        }
        print(json.dumps({"median": summary, "huddle": huddle}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
