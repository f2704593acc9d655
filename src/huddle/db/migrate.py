"""Apply Alembic migrations: the only way the schema is made, on SQLite and PostgreSQL."""

from __future__ import annotations

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
    """Bring the database to `revision`. Blocking: call from a thread inside an event loop."""
    command.upgrade(alembic_config(settings, url), revision)
