"""The benchmark's users: the seed (Huddle's database) and the Node peer lay them out alike.

Both servers must serve the same distinct users the same teams and tasks, or
the comparison measures different work: a user of the second big team must be
in team 2 on both, its first user its owner, unknown users refused on both.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from bench.seed import SMALL_TEAM_BASE, Layout, seed

from bench import peer_driver, servers
from tests.conftest import REQUIRE_SERVICES
from tests.gateway.live import SocketProbe

LAYOUT = Layout(big_teams=(3, 4))
USERS = 10  # users 8-10 fall past both big teams: team 3


def test_layout_puts_consecutive_users_in_big_teams_owned_by_their_first_user() -> None:
    assert [LAYOUT.big_team_of(u) for u in range(1, USERS + 1)] == [1] * 3 + [2] * 4 + [3] * 3
    assert [u for u in range(1, USERS + 1) if LAYOUT.is_owner(u)] == [1, 4, 8]
    assert LAYOUT.users_of(2) == (4, 7)
    assert LAYOUT.team_ids_of(5) == [2, SMALL_TEAM_BASE + 5, SMALL_TEAM_BASE + 105]
    assert LAYOUT.task_id(5) == 5000
    with pytest.raises(ValueError):
        Layout(big_teams=(0,))


def test_seed_writes_the_layout(tmp_path: Path) -> None:
    info = seed(tmp_path, users=USERS, layout=LAYOUT)
    assert info["users"] == USERS
    db = sqlite3.connect(tmp_path / "huddle.db")
    try:
        owners = db.execute(
            "SELECT team_id, user_id FROM memberships WHERE role = 'owner' ORDER BY team_id"
        ).fetchall()
        big = db.execute(
            "SELECT team_id, COUNT(*) FROM memberships WHERE team_id < ? GROUP BY team_id",
            (SMALL_TEAM_BASE,),
        ).fetchall()
        own_task = db.execute("SELECT team_id, created_by FROM tasks WHERE id = 5000").fetchone()
    finally:
        db.close()
    assert owners == [(1, 1), (2, 4), (3, 8)]
    assert big == [(1, 3), (2, 4), (3, 3)]
    assert own_task == (2, 5)  # each user's first task is in their big team, theirs to edit


def _require_node() -> None:
    try:
        peer_driver.node_executable()
        peer_driver.ensure_node_deps()
    except peer_driver.BenchDriverError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"{exc} (HUDDLE_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(str(exc))


def _mint(user_id: int) -> str:
    import time
    import uuid

    import jwt

    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, servers.SECRET, algorithm="HS256")


async def _authenticated(url: str, user_id: int) -> tuple[str, Any]:
    probe = SocketProbe(url)
    await probe.connect({"token": _mint(user_id)})
    try:
        for _ in range(50):
            if probe.events and probe.events[0][0] in ("authenticated", "authentication_error"):
                return probe.events[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no answer to user {user_id}: {probe.names}")
    finally:
        await probe.client.disconnect()


def _shape(answer: tuple[str, Any]) -> Any:
    name, payload = answer
    if name != "authenticated":
        return name, payload.get("code")
    teams = sorted((t["id"], t["role"], t["name"]) for t in payload["teams"])
    tasks = sorted((t["id"], t["teamId"], t["assigneeId"], t["title"]) for t in payload["tasks"])
    user = payload["user"]
    return name, (user["id"], user["email"], user["name"]), teams, tasks


@pytest.mark.slow
async def test_peer_and_huddle_serve_the_same_users(tmp_path: Path) -> None:
    _require_node()
    # Seeding and starting block (they run their own loops and waits): off this loop.
    template, _ = await asyncio.to_thread(servers.make_template, tmp_path, USERS, LAYOUT)

    def start(name: servers.ServerName) -> servers.Running:
        return servers.start(
            name,
            template=template,
            work_dir=tmp_path,
            options=servers.ServerOptions(),
            cpu=None,
            log_dir=tmp_path,
        )

    node = await asyncio.to_thread(start, "node")
    try:
        huddle = await asyncio.to_thread(start, "huddle")
        try:
            for user_id in (1, 2, 4, 7, 8, USERS, USERS + 1):
                on_node = _shape(await _authenticated(node.base_url, user_id))
                on_huddle = _shape(await _authenticated(huddle.base_url, user_id))
                assert on_node == on_huddle, user_id
                if user_id <= USERS:
                    assert on_huddle[2][0][0] == LAYOUT.big_team_of(user_id)
                    assert (on_huddle[2][0][1] == "owner") == LAYOUT.is_owner(user_id)
                else:
                    assert on_huddle == ("authentication_error", "TOKEN_INVALID")
        finally:
            huddle.stop()
    finally:
        node.stop()
