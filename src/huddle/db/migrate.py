"""Apply Alembic migrations: the only way the schema is made, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config

from huddle.config import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(settings: Settings, url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["settings"] = settings
    config.attributes["url"] = url
    return config


def upgrade(settings: Settings, url: str | None = None, revision: str = "head") -> None:
    """Bring the database to `revision`. Blocking; safe to call with an event loop running."""
    config = alembic_config(settings, url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(config, revision)
        return
    # Alembic's env runs its own event loop, which cannot nest inside a running one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(command.upgrade, config, revision).result()
