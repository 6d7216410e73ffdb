"""Jobs have a region: existing rows get the configured TRACKER_VOD_REGION.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 23:15:00.000000
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Settings' default, kept here so this revision never changes with tracker.config.
DEFAULT_REGION = "cn-shanghai"


def configured_region() -> str:
    """The region every job so far was submitted in: the one the tracker was configured with."""
    given = context.config.attributes.get("vod_region")
    return str(given or os.environ.get("TRACKER_VOD_REGION") or DEFAULT_REGION)


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("region", sa.String(length=32), nullable=True))
        batch_op.create_index(
            "ix_jobs_region_submitted_at_id", ["region", "submitted_at", "id"], unique=False
        )
    op.execute(sa.text("UPDATE jobs SET region = :region").bindparams(region=configured_region()))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_region_submitted_at_id")
        batch_op.drop_column("region")
