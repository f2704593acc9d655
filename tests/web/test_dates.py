"""The web client's due days (static/js/dates.js), run by Node.js in several time zones.

A day picked in the board is stored as that day at 00:00 UTC, so every member
sees the same day wherever they are, and it is overdue once that day has
ended in the reader's time zone (docs/architecture.md, web client decisions).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

import huddle.web
from tests.nodejs import unavailable

DATES = huddle.web.STATIC_DIR / "js" / "dates.js"
# Far east and far west of UTC, and UTC itself: a day must not shift in any.
ZONES = ("Pacific/Kiritimati", "America/Adak", "UTC")

SCRIPT = """
const d = await import(process.argv[1]);
const at = (local) => new Date(local);  // "YYYY-MM-DDTHH:MM" without a zone: local time
const task = (dueDate, status = "todo") => ({ dueDate, status });
const day = "2026-03-05T00:00:00.000Z";
console.log(JSON.stringify({
  shown: d.dayOf(day),
  sent: d.dueFromDay("2026-03-05"),
  roundTrip: d.dayOf(d.dueFromDay("2026-03-05")),
  none: [d.dayOf(null), d.dueFromDay(""), d.dueFromDay("5 March")],
  label: d.dueLabel(day, at("2026-01-01T12:00")),
  labelOtherYear: d.dueLabel(day, at("2027-01-01T12:00")),
  dayBefore: d.dueState(task(day), at("2026-03-04T23:59")),
  sameDayEarly: d.dueState(task(day), at("2026-03-05T00:01")),
  sameDayLate: d.dueState(task(day), at("2026-03-05T23:59")),
  dayAfter: d.dueState(task(day), at("2026-03-06T00:01")),
  doneAfter: d.dueState(task(day, "done"), at("2026-03-09T12:00")),
  noDue: d.dueState(task(null), at("2026-03-09T12:00")),
  // An instant set through the API at another time of day: judged as that instant.
  instantBefore: d.dueState(task("2026-03-05T15:30:00.000Z"), new Date("2026-03-05T15:29:00Z")),
  instantAfter: d.dueState(task("2026-03-05T15:30:00.000Z"), new Date("2026-03-05T15:31:00Z")),
  durations: [d.duration(400), d.duration(12_000), d.duration(185_000), d.duration(3_720_000)],
}));
"""


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        unavailable("Node.js is not installed (`node` is not on PATH)")
    return node


def _run(node: str, zone: str) -> dict[str, Any]:
    env = {**os.environ, "TZ": zone, "LANG": "en_US.UTF-8", "LC_ALL": "en_US.UTF-8"}
    done = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, DATES.as_uri()],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("zone", ZONES)
def test_a_due_day_is_the_same_day_everywhere_and_overdue_once_it_ends_locally(
    zone: str,
) -> None:
    result = _run(_node(), zone)
    assert result["shown"] == "2026-03-05"
    assert result["sent"] == "2026-03-05T00:00:00.000Z"
    assert result["roundTrip"] == "2026-03-05"
    assert result["none"] == ["", None, None]
    assert result["label"] == "Mar 5"
    assert result["labelOtherYear"] == "Mar 5, 2026"
    assert result["dayBefore"] == ""
    assert result["sameDayEarly"] == "today"
    assert result["sameDayLate"] == "today"
    assert result["dayAfter"] == "overdue"
    assert result["doneAfter"] == ""
    assert result["noDue"] == ""
    assert result["instantBefore"] != "overdue"
    assert result["instantAfter"] == "overdue"
    assert result["durations"] == ["0 s", "12 s", "3 min 5 s", "1 h 2 min"]
