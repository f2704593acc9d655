"""lean event rows: events.id as SQLite's rowid, a partial subject_user_id index

Each event wrote six b-tree pages on SQLite: the table, the BIGINT primary
key's own unique index (only an INTEGER primary key is the rowid), and the
indexes on team_id, subject_user_id and created_at. Nearly every event has no
subject_user_id, so its index now holds only the rows that have one (on
PostgreSQL too); on SQLite the id becomes the rowid. Four pages per event.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HAS_SUBJECT = sa.text("subject_user_id IS NOT NULL")


def _retype_id_on_sqlite(old: sa.types.TypeEngine[int], new: sa.types.TypeEngine[int]) -> None:
    """SQLite cannot change a column's type in place: the table is rebuilt, its rows
    copied (ids kept) and its other indexes made again. Nothing on PostgreSQL."""
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("events", recreate="always") as batch_op:
        batch_op.alter_column(
            "id", existing_type=old, type_=new, existing_nullable=False, autoincrement=False
        )


def upgrade() -> None:
    op.drop_index("ix_events_subject_user_id", table_name="events")
    _retype_id_on_sqlite(sa.BigInteger(), sa.Integer())  # the id becomes the rowid
    op.create_index(
        "ix_events_subject_user_id",
        "events",
        ["subject_user_id"],
        unique=False,
        sqlite_where=_HAS_SUBJECT,
        postgresql_where=_HAS_SUBJECT,
    )


def downgrade() -> None:
    op.drop_index("ix_events_subject_user_id", table_name="events")
    _retype_id_on_sqlite(sa.Integer(), sa.BigInteger())
    op.create_index("ix_events_subject_user_id", "events", ["subject_user_id"], unique=False)
