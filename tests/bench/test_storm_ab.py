"""`bench.storm_ab` runs two Huddle variants at toy size, so the tool cannot rot unnoticed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.storm_ab import parse_variant

ROOT = Path(__file__).resolve().parents[2]


def test_variants_are_a_label_and_settings() -> None:
    assert parse_variant("base:PYTHONPATH=../base/src,PRESENCE_BATCH_MS=0") == (
        "base",
        (("PYTHONPATH", "../base/src"), ("PRESENCE_BATCH_MS", "0")),
    )
    assert parse_variant("new:") == ("new", ())
    for bad in (":X=1", "a:X", "a:=1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"label|NAME=VALUE"):
            parse_variant(bad)


def test_each_variant_storms_a_fresh_server_every_round(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench.storm_ab", "--rounds", "2", "--users", "12",
            "--phase2", "8", "--concurrency", "4", "--quiet-ms", "300",
            "--variant", "shipped:", "--variant", "at-once:PRESENCE_BATCH_MS=0",
            "--out", str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["rounds"]] == ["shipped", "at-once"] * 2
    for round_ in data["rounds"]:
        assert [p["users"] for p in round_["phases"]] == ["1-12", "13-20"]
        for phase in round_["phases"]:
            # (CPU comes in 10 ms ticks: a phase of a few handshakes may show none.)
            assert phase["handshakesPerSec"] > 0 and phase["cpuUsPerHandshake"] >= 0
            assert not phase["failures"]
        assert round_["userMs"] + round_["systemMs"] > 0
    # Presence as shipped gathers a window; at once, one frame per arrival.
    for label in ("shipped", "at-once"):
        assert set(data["medians"][label][0]) >= {"handshakesPerSec", "p99Ms", "cpuUsPerHandshake"}
    frames = {r["variant"]: r["phases"][0]["presencePerOnlineClient"] for r in data["rounds"]}
    assert frames["at-once"] > frames["shipped"]
    assert "medians:" in result.stdout
