"""CPU per user of a socket's cold read: one user at a time, and in batches (docs/benchmarks.md).

    .venv/bin/python -m bench.bootstrap_reads --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/huddle_bootstrap_reads
    .venv/bin/python -m bench.bootstrap_reads            # SQLite in a temporary directory

Creates the database named in the URL (PostgreSQL: dropped again at the end;
it must not exist), migrates it, inserts N users who share one team, then
reads them with `UserService.bootstrap` (one user per read) and
`bootstrap_many` (batches of each `--batch` size), several rounds, and prints
this process's CPU time and wall time per user. This is what
`InProcessSource` chooses between (`gateway/sources/inprocess.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from huddle.config import Settings
from huddle.db.migrate import upgrade
from huddle.runtime import Runtime

SECRET = "bench-bootstrap-reads-secret-0123456789abcdef"  # noqa: S105 - never leaves the process
LIMITS = {"max_teams": 100, "max_tasks": 100}


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(
        make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _seed(runtime: Runtime, users: int) -> None:
    async with runtime.db.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO users (email, name, password_hash, is_admin, is_active, created_at) "
                "SELECT 'u' || g || '@bench.example', 'u' || g, 'x', false, true, "
                "CURRENT_TIMESTAMP FROM (WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL "
                "SELECT g + 1 FROM s WHERE g < :n) SELECT g FROM s) AS numbers"
            ),
            {"n": users},
        )
        await connection.execute(
            text(
                "INSERT INTO teams (name, description, created_by, created_at) "
                "VALUES ('everyone', '', 1, CURRENT_TIMESTAMP)"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO memberships (team_id, user_id, role, created_at) "
                "SELECT 1, id, 'member', CURRENT_TIMESTAMP FROM users"
            )
        )


async def _measure(runtime: Runtime, users: int, batches: list[int], rounds: int) -> None:
    ids = list(range(1, users + 1))
    for round_ in range(1, rounds + 1):
        started, cpu = time.perf_counter(), time.process_time()
        for user_id in ids:
            await runtime.users.bootstrap(user_id, **LIMITS)
        line = [
            f"round {round_}: one by one "
            f"{(time.process_time() - cpu) / users * 1e6:.0f} µs CPU "
            f"({(time.perf_counter() - started) / users * 1e6:.0f} wall) per user"
        ]
        for size in batches:
            started, cpu = time.perf_counter(), time.process_time()
            for first in range(0, users, size):
                await runtime.users.bootstrap_many(ids[first : first + size], **LIMITS)
            line.append(
                f"batches of {size}: {(time.process_time() - cpu) / users * 1e6:.0f} µs CPU "
                f"({(time.perf_counter() - started) / users * 1e6:.0f} wall)"
            )
        print("; ".join(line))


async def _run(args: argparse.Namespace) -> None:
    url: str | None = args.database_url
    postgres = url is not None and url.startswith("postgresql")
    if postgres:
        assert url is not None
        database = make_url(url).database
        await _admin(url, f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="huddle-bootstrap-") as directory:
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                app_env="test",
                jwt_secret=SECRET,
                database_url=url,
                redis_url=None,
                huddle_data_dir=Path(directory),
            )
            await asyncio.to_thread(upgrade, settings)
            runtime = await Runtime.start(settings)
            try:
                await _seed(runtime, args.users)
                print(f"{runtime.db.engine.dialect.name}, {args.users} users")
                await _measure(runtime, args.users, args.batch, args.rounds)
            finally:
                await runtime.stop()
    finally:
        if postgres:
            assert url is not None
            await _admin(url, f'DROP DATABASE IF EXISTS "{make_url(url).database}"')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: SQLite")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--batch", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    args.batch = args.batch or [3, 10, 50]
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
