"""Index the callbacks awaiting VOD's confirmation, by JobId.

Reconciliation looks up the JobIds of callbacks held for confirmation that no job has yet (a
callback may not give a waiting job its JobId before VOD confirms it).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Copied from tracker.models on purpose: a migration must not change when the models do.
UNCONFIRMED_SQL = "reason = 'pending_confirmation'"


def upgrade() -> None:
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_callback_events_unconfirmed",
            ["job_id"],
            unique=False,
            sqlite_where=sa.text(UNCONFIRMED_SQL),
            postgresql_where=sa.text(UNCONFIRMED_SQL),
        )


def downgrade() -> None:
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_callback_events_unconfirmed",
            sqlite_where=sa.text(UNCONFIRMED_SQL),
            postgresql_where=sa.text(UNCONFIRMED_SQL),
        )
