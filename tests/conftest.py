"""Shared fixtures: real PostgreSQL and Redis, each test session isolated.

The services keep state between runs, so a session creates its own PostgreSQL
database and Redis key prefix and drops them at the end. Without the services a
test that needs them is skipped, unless HUDDLE_REQUIRE_SERVICES=1 (CI), where a
missing service fails the run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest

PG_ADMIN_DSN = os.environ.get("HUDDLE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HUDDLE_TEST_REDIS", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("HUDDLE_REQUIRE_SERVICES") == "1"
SESSION_TAG = f"{os.getpid()}_{secrets.token_hex(4)}"


def _unavailable(service: str, exc: BaseException) -> None:
    message = f"{service} is not reachable: {exc!r}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (HUDDLE_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (asyncpg URL, no driver prefix)."""
    name = f"huddle_test_{SESSION_TAG}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_postgres(postgres_server_url: str, unique: str) -> Iterator[str]:
    """A PostgreSQL database of its own, never migrated (asyncpg URL, no driver prefix)."""
    name = f"huddle_empty_{unique}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = postgres_server_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis server; keys a session writes live under `redis_prefix`."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    yield REDIS_URL
    client.close()


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix private to this test session, deleted at its end."""
    import redis

    prefix = f"huddle-test-{SESSION_TAG}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def unique() -> str:
    """A short random tag for names that must not collide between tests."""
    return secrets.token_hex(4)
