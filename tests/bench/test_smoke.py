"""`huddle bench` end to end at toy sizes, so the harness cannot rot unnoticed.

Both servers, every socket scenario, one round: the run must write JSON with
numbers for Node and Huddle and a PNG chart. It needs Node.js and the bench's
npm packages; without them the test skips, or fails under
HUDDLE_REQUIRE_SERVICES=1 (CI). The REST throughput scenario (bench/rest.py)
is left out to stay under ~30 s per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
        "--quiet-ms=300",
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
    for scenario in (
        "handshake",
        "handshake-cold",
        "reject",
        "fanout-20",
        "broadcast-20",
        "idle-20",
    ):
        assert {(scenario, "node"), (scenario, "huddle")} <= servers_seen
    # Every client a distinct user, presence on: Huddle's members hear of each other.
    for scenario in ("fanout-20", "broadcast-20", "idle-20", "handshake-cold"):
        assert _raw(data, scenario, "huddle")["params"]["users"] == "1-20", scenario
    for scenario in ("fanout-20", "broadcast-20", "idle-20"):
        assert _raw(data, scenario, "huddle")["presence"]["frames"] > 0, scenario
        assert _raw(data, scenario, "node")["presence"]["frames"] == 0, scenario
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


def _run_bench(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "result.json"
    argv = [str(HUDDLE), "bench", "--no-progress", "--no-chart", f"--out={out}", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["errors"] == 0
    return data, result.stdout


def _raw(data: dict[str, Any], scenario: str, server: str) -> dict[str, Any]:
    (m,) = [m for m in data["measurements"] if m["scenario"] == scenario and m["server"] == server]
    assert m["ok"], (scenario, server, m.get("error"))
    raw: dict[str, Any] = m["raw"]
    return raw


def test_storm_and_rest_fanout_with_distinct_users_and_presence_on(tmp_path: Path) -> None:
    _require_node()
    data, stdout = _run_bench(
        tmp_path,
        "--quick",
        "--scenarios=storm,rest-fanout",
        "--storm=12,18",
        "--rest-fanout-clients=15",
        "--rest-fanout-count=10",
        "--editors=5",
        "--fanout-rounds=1",
        "--settle-ms=50",
        "--quiet-ms=300",
    )
    layout = data["layout"]["bigTeams"]
    second = 1 + layout[0]  # the first user of team 2

    # The storm: both phases connect every user once and all stay; phase 2 is team 2.
    for server in ("node", "huddle"):
        raw = _raw(data, "storm", server)
        assert raw["held"] == 30
        assert [p["users"] for p in raw["phases"]] == ["1-12", f"{second}-{second + 17}"]
        assert [p["handshakes"]["succeeded"] for p in raw["phases"]] == [12, 18]
        assert raw["server"]["rssPerConnBytes"] is not None
    # Presence is on, as shipped: Huddle's users hear of each other, the peer sends none.
    huddle_storm = _raw(data, "storm", "huddle")
    assert huddle_storm["presence"]["frames"] > 0
    assert huddle_storm["phases"][0]["presence"]["frames"] > 0
    assert _raw(data, "storm", "node")["presence"]["frames"] == 0

    # REST fan-out: Huddle's events are real PATCHes (the owner alone, then five
    # editors at once), each delivered once and in order to every member.
    for variant, workers in (("sequential", 1), ("concurrent", 5)):
        key = f"rest-fanout-15-{variant}"
        huddle = _raw(data, key, "huddle")
        assert huddle["params"]["triggerMethod"] == "PATCH"
        assert huddle["params"]["triggerWorkers"] == workers
        assert huddle["params"]["users"] == "1-15"
        measured = [r for r in huddle["rounds"] if not r["warmup"]]
        assert measured
        for r in measured:
            assert r["trigger"]["errors"] == []
            assert r["trigger"]["count"] == 10
            assert r["delivered"] == 15 * 10
            assert (r["lost"], r["duplicates"], r["outOfOrder"]) == (0, 0, 0)
            assert r["latencySource"] == "timestamp"  # the event's own time, no sentAt
        assert huddle["presence"]["frames"] > 0
        node = _raw(data, key, "node")
        assert node["params"]["triggerMethod"] == "POST"  # the peer's bench trigger
        assert node["rounds"][-1]["delivered"] == 15 * 10

    rows = {(r["scenario"], r["metric"]): r for r in data["summary"]}
    assert rows[("storm", "phase1.handshakesPerSec")]["goal"] == "≥ 1x"
    assert rows[("storm", "presenceFramesPerClient")]["huddle"] > 0
    assert rows[("rest-fanout-15-sequential", "serverCpuUsPerMsg")]["goal"] == "≤ 1x"
    assert rows[("rest-fanout-15-concurrent", "deliveryErrors")]["huddle"] == 0
    assert "presence frames per client" in stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
