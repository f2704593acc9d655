"""The composition root: what each role builds, and what the gateway process never loads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from huddle.app import build_app
from huddle.config import Settings
from huddle.errors import ConfigError

NEVER_IN_THE_GATEWAY = ("sqlalchemy", "argon2", "pwdlib", "alembic", "asyncpg", "aiosqlite")
NEVER_OF_HUDDLE = ("huddle.api", "huddle.db", "huddle.services", "huddle.runtime", "huddle.web")


def test_the_gateway_needs_a_backend(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, app_env="test", huddle_data_dir=tmp_path, jwt_secret="s" * 40
    )
    with pytest.raises(ConfigError, match=r"^BACKEND_URL: required for huddle gateway$"):
        build_app(settings, "gateway")


def test_the_gateway_process_loads_no_database_hashing_or_api_code(tmp_path: Path) -> None:
    """`huddle gateway` builds and starts its app (lifespan included) without importing
    SQLAlchemy, password hashing or any part of the API: it has no database."""
    program = textwrap.dedent(
        f"""
        import asyncio, json, sys
        from asgi_lifespan import LifespanManager
        from huddle.app import build_app
        from huddle.config import Settings

        async def main():
            settings = Settings(
                _env_file=None, app_env="test", jwt_secret="s" * 40,
                huddle_data_dir={str(tmp_path)!r}, backend_url="http://127.0.0.1:9",
            )
            async with LifespanManager(build_app(settings, "gateway")):
                pass

        asyncio.run(main())
        print(json.dumps(sorted(sys.modules)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "huddle.gateway.server" in loaded  # it did build the gateway
    offending = [
        name
        for name in loaded
        if name.split(".")[0] in NEVER_IN_THE_GATEWAY
        or any(name == p or name.startswith(p + ".") for p in NEVER_OF_HUDDLE)
    ]
    assert offending == []
