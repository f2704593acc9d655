"""`bench.outbox_cost` runs every variant at toy size, so the tool cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.outbox_cost import VARIANTS

ROOT = Path(__file__).resolve().parents[2]


def test_every_variant_writes_its_events_and_reports_numbers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.outbox_cost", "--events", "50", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:]}
    assert list(rows) == list(VARIANTS)
    for numbers in rows.values():
        per_event, p50, p999, worst = (float(n) for n in numbers)
        assert 0 < p50 <= p999 <= worst
        assert per_event > 0
