"""Seed a migrated SQLite database with the benchmark's users, teams and tasks, in bulk.

The same data the Node peer serves from its warm cache (bench/peer/server.js):
users 1..N, each a member of team 1 and of `extra_teams` more teams
(`2 + k*100 + id % 100` for k = 0, 1, …), with `tasks` tasks assigned (ids
`id*1000 + k`). Registering through the REST API would spend an Argon2 hash
per user; here every user shares one precomputed hash and the rows go in with
a few multi-row INSERTs through the SQLAlchemy models: 10,000 users take
about a second.

    .venv/bin/python -m bench.seed --data-dir /tmp/huddle-bench --users 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from huddle.config import Settings
from huddle.db.migrate import upgrade
from huddle.db.models import Membership, Task, Team, User
from huddle.db.session import create_engine

PASSWORD = "bench-password-1"  # noqa: S105 - a fixture, not a secret
CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 2_000
MAX_USERS = 100_000


def team_ids_of(user_id: int, extra_teams: int) -> list[int]:
    """Team 1 and the user's extra teams, as the peer computes them."""
    return [1] + [2 + k * 100 + user_id % 100 for k in range(extra_teams)]


def email_of(user_id: int) -> str:
    return f"user{user_id}@bench.huddle.test"


def _batches(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


def _rows(
    users: int, extra_teams: int, tasks: int, password_hash: str
) -> dict[str, list[dict[str, Any]]]:
    team_ids = {1} | {2 + k * 100 + r for k in range(extra_teams) for r in range(100)}
    out: dict[str, list[dict[str, Any]]] = {
        "teams": [
            {
                "id": team_id,
                "name": f"Team {team_id}",
                "description": f"Benchmark team {team_id}",
                "created_by": None,
                "created_at": CREATED_AT,
            }
            for team_id in sorted(team_ids)
        ],
        "users": [],
        "memberships": [],
        "tasks": [],
    }
    for user_id in range(1, users + 1):
        out["users"].append(
            {
                "id": user_id,
                "email": email_of(user_id),
                "name": f"Bench User {user_id}",
                "password_hash": password_hash,
                "is_admin": False,
                "is_active": True,
                "sessions_revoked_at": None,
                "created_at": CREATED_AT,
            }
        )
        teams = team_ids_of(user_id, extra_teams)
        for team_id in teams:
            out["memberships"].append(
                {"team_id": team_id, "user_id": user_id, "role": "member", "created_at": CREATED_AT}
            )
        for k in range(tasks):
            out["tasks"].append(
                {
                    "id": user_id * 1000 + k,
                    "team_id": teams[k % len(teams)],
                    "title": f"Task {k} of user {user_id}",
                    "description": "A task assigned to a benchmark user",
                    "status": "todo",
                    "priority": "medium",
                    "assignee_id": user_id,
                    "due_date": None,
                    "created_by": user_id,
                    "created_at": CREATED_AT,
                    "updated_at": CREATED_AT,
                    "version": 1,
                }
            )
    return out


async def _insert(conn: AsyncConnection, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    for batch in _batches(rows):
        await conn.execute(insert(model), list(batch))


async def seed_database(
    settings: Settings, *, users: int, extra_teams: int = 2, tasks: int = 3
) -> dict[str, Any]:
    """Migrate the database of `settings` and fill it; it must hold no users yet."""
    if not 1 <= users <= MAX_USERS:
        raise ValueError(f"users must be between 1 and {MAX_USERS}")
    if not 0 <= extra_teams <= 50 or not 0 <= tasks <= 200:
        raise ValueError("extra_teams must be 0..50 and tasks 0..200")
    started = time.perf_counter()
    upgrade(settings)
    password_hash = PasswordHash((Argon2Hasher(),)).hash(PASSWORD)
    rows = _rows(users, extra_teams, tasks, password_hash)
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            existing = (await conn.execute(select(func.count()).select_from(User))).scalar_one()
            if existing:
                raise ValueError(f"the database already has {existing} users")
            await _insert(conn, Team, rows["teams"])
            await _insert(conn, User, rows["users"])
            await _insert(conn, Membership, rows["memberships"])
            await _insert(conn, Task, rows["tasks"])
        async with engine.connect() as conn:
            # Fold the WAL into the main file, so copying huddle.db copies everything.
            await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    finally:
        await engine.dispose()
    return {
        "users": users,
        "teams": len(rows["teams"]),
        "memberships": len(rows["memberships"]),
        "tasks": len(rows["tasks"]),
        "seconds": round(time.perf_counter() - started, 2),
    }


def seed(data_dir: Path, *, users: int, extra_teams: int = 2, tasks: int = 3) -> dict[str, Any]:
    """Create and fill `data_dir/huddle.db` (SQLite); blocking."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        huddle_data_dir=data_dir,
        database_url=None,
        jwt_secret="bench-seed-unused-secret-0123456789abcdef",  # noqa: S106
        _env_file=None,  # type: ignore[call-arg]
    )
    return asyncio.run(seed_database(settings, users=users, extra_teams=extra_teams, tasks=tasks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--extra-teams", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=3)
    args = parser.parse_args(argv)
    result = seed(args.data_dir, users=args.users, extra_teams=args.extra_teams, tasks=args.tasks)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
