"""Apply Alembic migrations: the only way the schema is made, on SQLite and PostgreSQL.

`upgrade` is `huddle migrate`. `prepare` is what every process that opens the
database does before it serves (SPEC §3): the embedded SQLite database is
brought to the latest migration there and then, so a fresh data directory just
works; a PostgreSQL database that is behind the code stops the process with
`SchemaBehind`, whose message names `huddle migrate` (several processes share
that database, and migrating it is a deliberate step of a deployment).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from huddle.config import Settings
from huddle.db.session import create_engine

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaBehind(Exception):
    """The database lacks migrations this code needs (PostgreSQL: `huddle migrate`)."""


@dataclass(frozen=True)
class SchemaState:
    current: tuple[str, ...]
    """The revisions the database is at (empty: never migrated)."""
    head: tuple[str, ...]
    """The revisions this code needs."""
    known: bool
    """Whether this code knows every revision the database is at (False: it is ahead)."""

    @property
    def behind(self) -> bool:
        return self.known and set(self.current) != set(self.head)

    def describe(self) -> str:
        at = ", ".join(self.current) or "none"
        return (
            f"the database schema is behind this version of Huddle (database at revision "
            f"{at}, code needs {', '.join(self.head)})"
        )


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


def schema_state(settings: Settings) -> SchemaState:
    """Where the database stands against this code's migrations. Blocking; opens one connection."""
    script = ScriptDirectory.from_config(alembic_config(settings))

    def read(connection: Connection) -> tuple[str, ...]:
        return tuple(MigrationContext.configure(connection).get_current_heads())

    async def current() -> tuple[str, ...]:
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    revisions = asyncio.run(current())
    known = True
    for revision in revisions:
        try:
            script.get_revision(revision)
        except Exception:  # a revision of a newer Huddle: the database is ahead
            known = False
    return SchemaState(current=revisions, head=tuple(script.get_heads()), known=known)


def prepare(settings: Settings) -> SchemaState:
    """Before serving: migrate SQLite to the latest; refuse a PostgreSQL database that is behind.

    Raises `SchemaBehind` (PostgreSQL behind) or whatever reaching the database
    raised (the caller decides whether an unreachable database stops it).
    Alembic narrates each step at INFO; the caller logs one line for the whole.
    """
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        state = schema_state(settings)
        if state.behind:
            if not settings.effective_database_url.startswith("sqlite"):
                raise SchemaBehind(f"{state.describe()}; run `huddle migrate` first")
            upgrade(settings)
        return state
    finally:
        alembic_log.setLevel(level)
