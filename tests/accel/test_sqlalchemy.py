"""The inline SQLite driver under SQLAlchemy's async API, as scripts and `/readyz` use it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import column, insert, select, table, text

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
