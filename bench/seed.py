"""Seed a migrated SQLite database with the benchmark's users, teams and tasks, in bulk.

The same data the Node peer serves from its warm cache (bench/peer/server.js),
laid out by a `Layout`: users 1..N, each a distinct person in one big team —
team 1 holds the first `big_teams[0]` users, team 2 the next `big_teams[1]`,
and so on, any later user in one more team — whose first user is its owner;
each user is also a member of `extra_teams` small teams
(`1000 + k*100 + id % 100` for k = 0, 1, …) and has `tasks` tasks assigned
(ids `id*1000 + k`, task `id*1000` in the big team, created by the user, so
that any member can edit their own from the REST API). Registering through
the REST API would spend an Argon2 hash per user; here every user shares one
precomputed hash and the rows go in with a few multi-row INSERTs through the
SQLAlchemy models: 10,000 users take about a second.

    .venv/bin/python -m bench.seed --data-dir /tmp/huddle-bench --users 10000 --big-teams 2000,3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
SMALL_TEAM_BASE = 1000
"""Small teams are numbered from here, above any big team's id."""


@dataclass(frozen=True)
class Layout:
    """Who is in which team: the rule the seed and the Node peer share.

    Team k (1-based) holds the k-th run of `big_teams[k-1]` consecutive users
    and is owned by its first user; users past them all share team
    `len(big_teams) + 1`. Each user is also in `extra_teams` small teams of
    about N/100 members each.
    """

    big_teams: tuple[int, ...] = (2000, 3000)
    extra_teams: int = 2
    tasks: int = 3

    def __post_init__(self) -> None:
        if not self.big_teams or len(self.big_teams) > 50 or min(self.big_teams) < 1:
            raise ValueError("big_teams: 1 to 50 sizes, each at least 1")
        if sum(self.big_teams) > MAX_USERS:
            raise ValueError(f"big_teams: at most {MAX_USERS} users in all")
        if not 0 <= self.extra_teams <= 50 or not 0 <= self.tasks <= 200:
            raise ValueError("extra_teams must be 0..50 and tasks 0..200")

    def first_user_of(self, team_id: int) -> int:
        """The first (owning) user of big team `team_id`, 1 ≤ team_id ≤ len(big_teams) + 1."""
        if not 1 <= team_id <= len(self.big_teams) + 1:
            raise ValueError(f"no big team {team_id}")
        return 1 + sum(self.big_teams[: team_id - 1])

    def users_of(self, team_id: int) -> tuple[int, int]:
        """First and last user of big team `team_id` (1 ≤ team_id ≤ len(big_teams))."""
        first = self.first_user_of(team_id)
        return first, first + self.big_teams[team_id - 1] - 1

    def big_team_of(self, user_id: int) -> int:
        first = 1
        for k, size in enumerate(self.big_teams):
            if user_id < first + size:
                return k + 1
            first += size
        return len(self.big_teams) + 1

    def is_owner(self, user_id: int) -> bool:
        return self.first_user_of(self.big_team_of(user_id)) == user_id

    def team_ids_of(self, user_id: int) -> list[int]:
        """The big team first, then the small ones, as the peer lists them."""
        return [self.big_team_of(user_id)] + [
            SMALL_TEAM_BASE + k * 100 + user_id % 100 for k in range(self.extra_teams)
        ]

    def task_id(self, user_id: int, k: int = 0) -> int:
        """The user's k-th task; k = 0 is in the big team."""
        return user_id * 1000 + k

    def peer_env(self) -> dict[str, str]:
        """The same layout for bench/peer/server.js."""
        return {
            "PEER_BIG_TEAMS": ",".join(str(n) for n in self.big_teams),
            "PEER_EXTRA_TEAMS": str(self.extra_teams),
            "PEER_TASKS": str(self.tasks),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "bigTeams": list(self.big_teams),
            "extraTeams": self.extra_teams,
            "tasks": self.tasks,
        }


def email_of(user_id: int) -> str:
    return f"user{user_id}@bench.huddle.test"


def _batches(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


def _rows(users: int, layout: Layout, password_hash: str) -> dict[str, list[dict[str, Any]]]:
    team_ids = set(range(1, layout.big_team_of(users) + 1)) | {
        SMALL_TEAM_BASE + k * 100 + r for k in range(layout.extra_teams) for r in range(100)
    }
    out: dict[str, list[dict[str, Any]]] = {
        "teams": [
            {
                "id": team_id,
                "name": f"Team {team_id}",
                "description": f"Benchmark team {team_id}",
                "created_by": layout.first_user_of(team_id) if team_id < SMALL_TEAM_BASE else None,
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
        teams = layout.team_ids_of(user_id)
        owner = layout.is_owner(user_id)
        for index, team_id in enumerate(teams):
            role = "owner" if index == 0 and owner else "member"
            out["memberships"].append(
                {"team_id": team_id, "user_id": user_id, "role": role, "created_at": CREATED_AT}
            )
        for k in range(layout.tasks):
            out["tasks"].append(
                {
                    "id": layout.task_id(user_id, k),
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


async def seed_database(settings: Settings, *, users: int, layout: Layout) -> dict[str, Any]:
    """Migrate the database of `settings` and fill it; it must hold no users yet."""
    if not 1 <= users <= MAX_USERS:
        raise ValueError(f"users must be between 1 and {MAX_USERS}")
    started = time.perf_counter()
    upgrade(settings)
    password_hash = PasswordHash((Argon2Hasher(),)).hash(PASSWORD)
    rows = _rows(users, layout, password_hash)
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            existing = (await conn.execute(select(func.count()).select_from(User))).scalar_one()
            if existing:
                raise ValueError(f"the database already has {existing} users")
            await _insert(conn, User, rows["users"])  # before teams: their owners
            await _insert(conn, Team, rows["teams"])
            await _insert(conn, Membership, rows["memberships"])
            await _insert(conn, Task, rows["tasks"])
        async with engine.connect() as conn:
            # Fold the WAL into the main file, so copying huddle.db copies everything.
            await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    finally:
        await engine.dispose()
    return {
        "users": users,
        "layout": layout.describe(),
        "teams": len(rows["teams"]),
        "memberships": len(rows["memberships"]),
        "tasks": len(rows["tasks"]),
        "seconds": round(time.perf_counter() - started, 2),
    }


def seed(data_dir: Path, *, users: int, layout: Layout | None = None) -> dict[str, Any]:
    """Create and fill `data_dir/huddle.db` (SQLite); blocking."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        huddle_data_dir=data_dir,
        database_url=None,
        jwt_secret="bench-seed-unused-secret-0123456789abcdef",  # noqa: S106
        _env_file=None,  # type: ignore[call-arg]
    )
    return asyncio.run(seed_database(settings, users=users, layout=layout or Layout()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--big-teams", default="2000,3000", help="sizes of the big teams (default 2000,3000)"
    )
    parser.add_argument("--extra-teams", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        big = tuple(int(part) for part in args.big_teams.split(","))
        layout = Layout(big, args.extra_teams, args.tasks)
    except ValueError as exc:
        parser.error(str(exc))
    result = seed(args.data_dir, users=args.users, layout=layout)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
