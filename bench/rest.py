"""REST throughput: `GET /api/users/{userId}/teams` on SQLite, for a user in 20 teams
(`--read tasks`: `GET /api/users/{userId}/tasks`, 20 tasks assigned to the user).

Starts `huddle serve` in its own process (pinned to CPU 0 when possible),
seeds through the real API, then drives it from a separate Node.js process
(keep-alive HTTP, pinned to CPU 1) and prints one JSON object.

    .venv/bin/python -m bench.rest --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.peer_driver import (
    BENCH_DIR,
    free_port,
    node_executable,
    pin_to_cpu,
    read_proc_stats,
    start_server,
    stop_process,
)

HTTP_LOADGEN = BENCH_DIR / "loadgen" / "http.js"
SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"  # noqa: S105 - loopback fixture
PASSWORD = "bench-password-1"  # noqa: S105


def _huddle() -> str:
    return str(Path(sys.executable).with_name("huddle"))


def seed(base_url: str, teams: int) -> tuple[int, str]:
    """A user in `teams` teams, owning them, with `teams` tasks assigned to them in the
    first; returns (user id, access token)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        user = client.post(
            "/api/auth/register",
            json={"email": "bench@example.com", "password": PASSWORD, "name": "Bench"},
        ).json()
        tokens = client.post(
            "/api/auth/login", json={"email": "bench@example.com", "password": PASSWORD}
        ).json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        first = None
        for i in range(teams):
            response = client.post("/api/teams", json={"name": f"Team {i}"}, headers=headers)
            response.raise_for_status()
            first = first or response.json()["id"]
        for i in range(teams):
            response = client.post(
                f"/api/teams/{first}/tasks",
                json={"title": f"Task {i}", "assigneeId": user["id"], "description": "x" * 80},
                headers=headers,
            )
            response.raise_for_status()
        return int(user["id"]), str(tokens["access_token"])


def run(
    seconds: float,
    connections: int,
    teams: int,
    server_cpu: int,
    load_cpu: int,
    read: str = "teams",
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="huddle-bench-rest-") as tmp:
        env = {
            "APP_ENV": "development",
            "HUDDLE_DATA_DIR": tmp,
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "warning",
            "RATE_LIMIT_ENABLED": "false",
        }
        subprocess.run(
            [_huddle(), "migrate"], env={**os.environ, **env}, check=True, capture_output=True
        )
        port = free_port()
        server = start_server(
            [_huddle(), "serve", "--port", str(port)],
            name="huddle",
            port=port,
            health_url=f"http://127.0.0.1:{port}/healthz",
            env=env,
            cpu=server_cpu,
        )
        try:
            user_id, token = seed(server.base_url, teams)
            url = f"{server.base_url}/api/users/{user_id}/{read}"
            check = httpx.get(url, headers={"Authorization": f"Bearer {token}"}).json()
            if len(check["items"]) != teams:
                raise RuntimeError(f"expected {teams} {read}, got {len(check['items'])}")
            before = read_proc_stats(server.pid)
            load = subprocess.Popen(
                [
                    node_executable(),
                    str(HTTP_LOADGEN),
                    "--url",
                    url,
                    "--bearer",
                    token,
                    "--connections",
                    str(connections),
                    "--duration",
                    str(seconds),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                pin_to_cpu(load.pid, load_cpu)
                out, err = load.communicate(timeout=seconds + 60)
            finally:
                stop_process(load)
            after = read_proc_stats(server.pid)
            if load.returncode != 0:
                raise RuntimeError(f"load generator failed: {err.decode()[-500:]}")
            result: dict[str, Any] = json.loads(out)
            result["serverCpuSeconds"] = round(after.cpu_seconds - before.cpu_seconds, 3)
            result["serverRssMb"] = round(after.rss_bytes / 1e6, 1)
            result["teams"] = teams
        finally:
            stop_process(server)
        server.log_path.unlink(missing_ok=True)  # kept only when something failed
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="huddle bench rest", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--read", choices=("teams", "tasks"), default="teams")
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    server_cpu, load_cpu = (0, 1) if cpus > 1 else (0, 0)
    results = [
        run(args.seconds, args.connections, args.teams, server_cpu, load_cpu, args.read)
        for _ in range(args.rounds)
    ]
    rates = sorted(r["requestsPerSecond"] for r in results)
    summary = {
        "benchmark": f"rest_user_{args.read}",
        "medianRequestsPerSecond": round(rates[len(rates) // 2], 1),
        "rounds": results,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
