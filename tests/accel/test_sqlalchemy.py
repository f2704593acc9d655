"""The inline SQLite driver under SQLAlchemy's async API, as scripts, `/readyz` and reads use it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import bindparam, column, insert, select, table, text
from sqlalchemy.exc import OperationalError

from huddle.accel.sqlalchemy import PreparedQueries
from huddle.db.queries import CoreQueries
from huddle.db.session import create_engine
from tests.api.conftest import make_settings

_ITEMS = table("items", column("id"), column("name"))


async def test_async_connection_executes_and_executes_many(tmp_path: Path) -> None:
    """`AsyncConnection.execute` demands a greenlet switch (AwaitRequired without one)."""
    engine = create_engine(make_settings(tmp_path))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
            await conn.execute(insert(_ITEMS), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
            await conn.exec_driver_sql("INSERT INTO items VALUES (3, 'c')")
        async with engine.connect() as conn:
            names = (await conn.execute(select(_ITEMS.c.name).order_by(_ITEMS.c.id))).scalars()
            assert list(names) == ["a", "b", "c"]
            async with conn.stream(select(_ITEMS.c.id)) as rows:
                assert [row.id async for row in rows] == [1, 2, 3]
    finally:
        await engine.dispose()


async def test_reads_through_query_runners_give_the_same_rows_and_errors(tmp_path: Path) -> None:
    """Prepared reads (on the pooled sqlite3 connection) answer as SQLAlchemy Core does:
    the same rows, and a failing read raises SQLAlchemy's own error class, after which
    the pool reads on as before."""
    engine = create_engine(make_settings(tmp_path))
    by_name = select(_ITEMS.c.id, _ITEMS.c.name).where(_ITEMS.c.name > bindparam("after"))
    missing = select(table("no_such_table", column("id")).c.id).where(
        column("id") > bindparam("after")
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
            await conn.execute(insert(_ITEMS), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
        queries = [(by_name, {"after": "a"}), (by_name, {"after": ""})]
        for runner in (CoreQueries(), PreparedQueries()):
            assert await runner.select(engine, queries) == [[(2, "b")], [(1, "a"), (2, "b")]]
            with pytest.raises(OperationalError, match="no such table"):
                await runner.select(engine, [(missing, {"after": 0})])
            assert await runner.select(engine, queries[:1]) == [[(2, "b")]]
    finally:
        await engine.dispose()


def _open_descriptors(path: Path) -> int:
    """This process's open file descriptors on `path` (and its -wal/-shm files)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        count += str(target).startswith(str(path))
    return count


async def test_prepared_reads_see_every_commit_and_let_go_of_the_file(tmp_path: Path) -> None:
    """Reads run on one connection held outside the pool: each sees what was committed
    before it (on the pool's connections), a failed read leaves the next one working,
    a disposed engine reads on, and `close` releases the file."""
    settings = make_settings(tmp_path)
    engine = create_engine(settings)
    database = tmp_path / "huddle.db"
    assert str(engine.url.database) == str(database)
    names = select(_ITEMS.c.name).where(_ITEMS.c.id > bindparam("after")).order_by(_ITEMS.c.id)
    missing = select(table("no_such_table", column("id")).c.id).where(
        column("id") > bindparam("after")
    )
    runner = PreparedQueries()
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
        assert await runner.select(engine, [(names, {"after": 0})]) == [[]]
        for item in range(1, 4):
            async with engine.begin() as conn:
                await conn.execute(insert(_ITEMS), [{"id": item, "name": f"n{item}"}])
            rows = await runner.select(engine, [(names, {"after": 0})])
            assert rows == [[(f"n{i}",) for i in range(1, item + 1)]]
        with pytest.raises(OperationalError, match="no such table"):
            await runner.select(engine, [(missing, {"after": 0})])
        assert await runner.select(engine, [(names, {"after": 2})]) == [[("n3",)]]
        await engine.dispose()
        async with engine.begin() as conn:
            await conn.execute(insert(_ITEMS), [{"id": 4, "name": "n4"}])
        assert await runner.select(engine, [(names, {"after": 3})]) == [[("n4",)]]
        await engine.dispose()
        assert _open_descriptors(database) > 0  # the read connection
        runner.close()
        assert _open_descriptors(database) == 0
    finally:
        runner.close()
        await engine.dispose()
