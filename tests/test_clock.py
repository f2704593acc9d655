"""The wire format of timestamps (SPEC §4): ISO-8601 UTC, milliseconds, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from huddle.clock import iso


def test_every_input_kind_gives_the_same_instant() -> None:
    instant = datetime(2026, 11, 26, 7, 5, 9, 123_999, tzinfo=UTC)
    assert iso(instant) == "2026-11-26T07:05:09.123Z"  # truncated, not rounded
    assert iso(instant.replace(tzinfo=None)) == "2026-11-26T07:05:09.123Z"  # naive = UTC
    assert iso(instant.astimezone(timezone(timedelta(hours=-5)))) == "2026-11-26T07:05:09.123Z"
    assert iso(instant.timestamp()) == "2026-11-26T07:05:09.123Z"
    assert iso(None) is None


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=9, minutes=30))]),
    )
)
def test_matches_isoformat_in_utc(value: datetime) -> None:
    expected = value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso(value) == expected
