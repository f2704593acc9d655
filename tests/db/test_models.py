"""Column types: a time read as its wire form is the text `iso` makes of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    select,
    text,
    type_coerce,
)

from huddle.clock import iso
from huddle.db.models import WIRE_TIME, UTCDateTime

_metadata = MetaData()
_times = Table(
    "times", _metadata, Column("id", Integer, primary_key=True), Column("at", UTCDateTime)
)


def test_wire_time_reads_what_iso_writes_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'times.db'}")
    _metadata.create_all(engine)

    @settings(max_examples=300, deadline=None)
    @given(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
    def check(moment: datetime, zone: timezone | None) -> None:
        value = moment if zone is None else moment.replace(tzinfo=zone)
        with engine.begin() as connection:
            connection.execute(_times.delete())
            connection.execute(insert(_times).values(id=1, at=value))
            stored, wire = connection.execute(
                select(_times.c.at, type_coerce(_times.c.at, WIRE_TIME))
            ).one()
        assert wire == iso(stored) == iso(value)

    check()
    # Text SQLAlchemy did not write (no fraction) is parsed rather than cut.
    with engine.begin() as connection:
        connection.execute(text("UPDATE times SET at = '2026-01-02 03:04:05'"))
        wire = connection.execute(select(type_coerce(_times.c.at, WIRE_TIME))).scalar_one()
    assert wire == "2026-01-02T03:04:05.000Z"
