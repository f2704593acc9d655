"""The database engine and session factory, built from settings (never at import time)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession  # re-export for the app
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from huddle import accel, wirejson
from huddle.config import Settings
from huddle.db.checkpoint import SAFETY_NET_PAGES

# JSON columns (the outbox's payloads) through orjson, as on the Socket.IO wire.
_JSON: dict[str, Any] = {"json_serializer": wirejson.dumps, "json_deserializer": wirejson.loads}


PG_CONNECT_TIMEOUT = 2.0
"""Seconds to open a PostgreSQL connection (a reachable server answers in milliseconds)."""
PG_COMMAND_TIMEOUT = 3.0
"""Seconds any one statement may take (asyncpg's `command_timeout`). Without it a
connection whose packets are silently dropped (a partition, a dead host) holds its
request until TCP gives up, minutes later; with it the request answers 503
`DATABASE_UNAVAILABLE` (docs/operations.md, "Fault matrix")."""
PG_POOL_TIMEOUT = 5.0
"""Seconds a request waits for a pooled connection before answering 503."""


def _sqlite_pragmas(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; busy_timeout makes writers queue
    # instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # Checkpoints run in a thread (`huddle.db.checkpoint`); this is only the safety net.
    cursor.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")
    cursor.close()


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """An async engine for DATABASE_URL (SQLite by default, PostgreSQL via asyncpg)."""
    url = url or settings.effective_database_url
    if url.startswith("sqlite"):
        settings.huddle_data_dir.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {}
        if accel.load(settings.accel).sqlalchemy:
            from huddle.accel.sqlalchemy import dbapi

            extra["module"] = dbapi()
            # With a checkout timeout SQLAlchemy waits on the pool through
            # asyncio.wait_for, a new task and a loop turn per checkout, even when
            # a connection is free. Inline units never interleave, so the pool is
            # never drained for long; wait without a timeout instead.
            extra["pool_timeout"] = None
        else:
            # aiosqlite yields between statements, so two units on two connections
            # could interleave and one fail to upgrade its read snapshot to SQLite's
            # single write lock ("database is locked"). One connection makes units
            # take turns, as they do inline. (SQLAlchemy 2.0 defaults aiosqlite to
            # NullPool, a connection per checkout: the pool is named here.)
            extra["poolclass"] = AsyncAdaptedQueuePool
            extra["pool_size"] = 1
            extra["max_overflow"] = 0
        engine = create_async_engine(url, connect_args={"timeout": 5}, **_JSON, **extra)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=PG_POOL_TIMEOUT,
        connect_args={"timeout": PG_CONNECT_TIMEOUT, "command_timeout": PG_COMMAND_TIMEOUT},
        **_JSON,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
