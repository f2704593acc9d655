"""Migration 0002 (lean event rows) and the WAL checkpoints that run off the event loop."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from huddle.config import Settings
from huddle.db.checkpoint import INTERVAL, SAFETY_NET_PAGES
from huddle.db.migrate import alembic_config, upgrade
from huddle.runtime import Runtime
from huddle.services.bench import BenchService
from tests.api.conftest import make_settings

_ROWS = [
    # (id, team_id, subject_user_id): ids beyond 32 bits must survive the rebuild.
    (1, 1, None),
    (2, 1, 7),
    (3, 2, None),
    (2**40 + 5, 2, 7),
]
_SUBJECT_QUERY = "SELECT id FROM events WHERE subject_user_id = 7 AND id > 0 ORDER BY id"


def _insert_rows(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for event_id, team_id, subject in _ROWS:
            connection.execute(
                text(
                    "INSERT INTO events (id, team_id, type, payload, actor_id, "
                    "subject_user_id, created_at) VALUES (:id, :team, 'task_updated', "
                    ":payload, 1, :subject, :at)"
                ),
                {
                    "id": event_id,
                    "team": team_id,
                    "payload": json.dumps({"eventId": event_id}),
                    "subject": subject,
                    "at": datetime(2026, 12, 4, tzinfo=UTC),
                },
            )
    engine.dispose()


def _read_rows(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, team_id, subject_user_id FROM events ORDER BY id")
        ).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_sqlite_upgrade_keeps_every_event_and_makes_its_id_the_rowid(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    sync_url = f"sqlite:///{tmp_path / 'huddle.db'}"
    upgrade(settings, revision="0001")
    _insert_rows(sync_url)
    upgrade(settings)

    assert _read_rows(sync_url) == sorted(_ROWS)
    db = sqlite3.connect(tmp_path / "huddle.db")
    # No separate primary-key index: the id is the rowid.
    indexes = {row[1]: row for row in db.execute("PRAGMA index_list(events)")}
    assert set(indexes) == {
        "ix_events_team_id",
        "ix_events_created_at",
        "ix_events_subject_user_id",
    }
    assert indexes["ix_events_subject_user_id"][4] == 1  # partial
    assert db.execute("SELECT count(*) FROM events WHERE rowid != id").fetchone() == (0,)
    # The partial index holds only the rows with a subject, and replay's query uses it.
    plan = " ".join(str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + _SUBJECT_QUERY))
    assert "ix_events_subject_user_id" in plan
    assert db.execute(_SUBJECT_QUERY).fetchall() == [(2,), (2**40 + 5,)]
    db.close()

    downgrade(settings)
    assert _read_rows(sync_url) == sorted(_ROWS)
    db = sqlite3.connect(tmp_path / "huddle.db")
    assert (
        "BIGINT" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    )
    db.close()


def downgrade(settings: Settings, revision: str = "0001") -> None:
    command.downgrade(alembic_config(settings), revision)


@pytest.mark.postgres
def test_postgresql_upgrade_keeps_every_event_and_indexes_only_subjects(
    tmp_path: Path, empty_postgres: str
) -> None:
    settings = make_settings(
        tmp_path, empty_postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    )
    upgrade(settings, revision="0001")
    asyncio.run(_pg_insert_rows(empty_postgres))
    upgrade(settings)
    definition = asyncio.run(
        _pg_fetch(
            empty_postgres,
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_events_subject_user_id'",
        )
    )
    assert "WHERE (subject_user_id IS NOT NULL)" in definition[0][0]
    rows = asyncio.run(
        _pg_fetch(empty_postgres, "SELECT id, team_id, subject_user_id FROM events ORDER BY id")
    )
    assert [tuple(row) for row in rows] == sorted(_ROWS)
    downgrade(settings)
    definition = asyncio.run(
        _pg_fetch(
            empty_postgres,
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_events_subject_user_id'",
        )
    )
    assert "WHERE" not in definition[0][0]
    rows = asyncio.run(_pg_fetch(empty_postgres, "SELECT id FROM events ORDER BY id"))
    assert [row[0] for row in rows] == sorted(event_id for event_id, _, _ in _ROWS)


async def _pg_insert_rows(dsn: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.executemany(
            "INSERT INTO events (id, team_id, type, payload, actor_id, subject_user_id, "
            "created_at) VALUES ($1, $2, 'task_updated', '{}', 1, $3, now())",
            _ROWS,
        )
    finally:
        await connection.close()


async def _pg_fetch(dsn: str, sql: str) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


def _events_in_main_file(tmp_path: Path) -> int:
    """Events the database file holds by itself, without its WAL (a copy of the file
    alone); -1 when the copy caught a checkpoint mid-way (a torn file)."""
    alone = tmp_path / "alone"
    alone.mkdir(exist_ok=True)
    for leftover in alone.glob("huddle.db*"):
        leftover.unlink()
    shutil.copyfile(tmp_path / "huddle.db", alone / "huddle.db")
    db = sqlite3.connect(alone / "huddle.db")
    try:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.DatabaseError:
        return -1
    finally:
        db.close()


async def test_writes_reach_the_database_file_through_the_checkpointer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    upgrade(settings)
    runtime = await Runtime.start(settings)
    try:
        checkpointer = runtime.checkpointer
        assert checkpointer is not None
        async with runtime.engine.connect() as connection:
            pragma = await connection.execute(text("PRAGMA wal_autocheckpoint"))
            assert pragma.scalar_one() == SAFETY_NET_PAGES
        # 600 events write ~2,400 WAL pages: past SQLite's default threshold (1,000),
        # under the serving connections' safety net, so only the checkpointer copies them.
        await BenchService(runtime.db).broadcast(1, 600, 300)
        async with asyncio.timeout(10):
            while await asyncio.to_thread(_events_in_main_file, tmp_path) != 600:
                await asyncio.sleep(0.05)
        # Nothing committed since: the checkpointer stays idle (no thread, no SQLite).
        idle_from = checkpointer.passes
        await asyncio.sleep(4 * INTERVAL)
        assert checkpointer.passes == idle_from
        busy, wal_pages, copied = await asyncio.to_thread(checkpointer.checkpoint)
        assert busy == 0 and copied == wal_pages
        await BenchService(runtime.db).broadcast(1, 5, 300)
        assert await runtime.users.account(1) is None  # a read, on the read connection
    finally:
        await runtime.stop()
    # Stopping runs a last pass: the file alone holds every commit.
    assert _events_in_main_file(tmp_path) == 605
    # ... and closes every connection to it, the read connection's included.
    open_files = [fd.readlink() for fd in Path("/proc/self/fd").iterdir() if fd.exists()]
    assert not [name for name in open_files if str(name).startswith(str(tmp_path))]
