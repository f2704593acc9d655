"""`huddle bench` end to end at toy sizes, so the harness cannot rot unnoticed.

Both servers, every socket scenario, one round: the run must write JSON with
numbers for Node and Huddle and a PNG chart. It needs Node.js and the bench's
npm packages; without them the test skips, or fails under
HUDDLE_REQUIRE_SERVICES=1 (CI). The REST scenario (bench/rest.py) is left out
to stay under ~30 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
HUDDLE = Path(sys.executable).with_name("huddle")

pytestmark = pytest.mark.slow


def _require_node() -> None:
    from bench import peer_driver

    try:
        peer_driver.node_executable()
        peer_driver.ensure_node_deps()
    except peer_driver.BenchDriverError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"{exc} (HUDDLE_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(str(exc))


def test_bench_runs_both_servers_and_writes_json_and_chart(tmp_path: Path) -> None:
    _require_node()
    out = tmp_path / "result.json"
    chart = tmp_path / "chart.png"
    argv = [
        str(HUDDLE),
        "bench",
        "--quick",
        "--rounds=1",
        "--scenarios=handshake,reject,fanout,broadcast,idle,compression",
        "--handshake-clients=20",
        "--reject-clients=20",
        "--rooms=20",
        "--count=5",
        "--fanout-rounds=1",
        "--broadcast-clients=20",
        "--broadcast-rounds=1",
        "--idle=20",
        "--compression-clients=20",
        "--compression-count=5",
        "--settle-ms=100",
        "--no-progress",
        f"--out={out}",
        f"--chart={chart}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    started = time.monotonic()
    result = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())

    assert data["errors"] == 0
    assert data["interrupted"] is False
    servers_seen = {(m["scenario"], m["server"]) for m in data["measurements"]}
    for scenario in ("handshake", "reject", "fanout-20", "broadcast-20", "idle-20"):
        assert {(scenario, "node"), (scenario, "huddle")} <= servers_seen
    rows = {(r["scenario"], r["metric"]): r for r in data["summary"]}
    for key in (
        ("handshake", "handshakesPerSec"),
        ("reject", "rejectionsPerSec"),
        ("fanout-20", "msgsPerSec"),
        ("broadcast-20", "p99Ms"),
        ("idle-20", "rssPerConnKB"),
        ("compression-on", "msgsPerSec"),
    ):
        row = rows[key]
        assert isinstance(row["node"], int | float), key
        assert isinstance(row["huddle"], int | float), key
        assert row["ratio"] is not None, key
    for key in (("fanout-20", "deliveryErrors"), ("broadcast-20", "deliveryErrors")):
        assert rows[key]["huddle"] == 0
        assert rows[key]["node"] == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Huddle/Node" in result.stdout
    # Every server and load generator the harness started is gone.
    pids = set()
    for m in data["measurements"]:
        raw = m.get("raw") or {}
        pids.update(
            p
            for p in (raw.get("params", {}).get("serverPid"), raw.get("loadgen", {}).get("pid"))
            if p
        )
    assert len(pids) >= 10
    assert [pid for pid in pids if _alive(pid)] == []
    print(f"bench smoke run took {elapsed:.1f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
