"""Initial schema: jobs, submissions, callback inbox, leases, heartbeats.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 11:55:40.693541
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept verbatim here (not imported) so this revision never changes with the models.
CLAIM_PREDICATE = "origin = 'submitted' AND state <> 'submit_failed' AND superseded_at IS NULL"
# Copied from tracker.models on purpose: a migration must not change when the models do.
UNFLAGGED_SQL = "NOT stale AND state IN ('submitting', 'submit_unknown', 'processing')"
PENDING_SQL = "pending_status IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "callback_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("dedup_key", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("media_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "headers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deliveries", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_events")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_callback_events_dedup_key")),
    )
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_callback_events_job_id_received_at", ["job_id", "received_at"], unique=False
        )
        batch_op.create_index(
            "ix_callback_events_pending",
            ["id"],
            unique=False,
            sqlite_where=sa.text("applied IS NULL"),
            postgresql_where=sa.text("applied IS NULL"),
        )
        batch_op.create_index(
            batch_op.f("ix_callback_events_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "heartbeats",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_heartbeats")),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "submissions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("media_id", sa.String(length=128), nullable=False),
        sa.Column(
            "types",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "user_data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=128), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
    )
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_submissions_media_id"), ["media_id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column(
            "submission_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("media_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("stale", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("stale_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("code", sa.String(length=128), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "user_data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_status", sa.String(length=32), nullable=True),
        sa.Column("pending_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"], name=op.f("fk_jobs_submission_id_submissions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("job_id", name=op.f("uq_jobs_job_id")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_media_id_type", ["media_id", "type"], unique=False)
        batch_op.create_index("ix_jobs_stale_state", ["stale", "state"], unique=False)
        batch_op.create_index(
            "ix_jobs_unflagged",
            ["state", "submitted_at"],
            unique=False,
            sqlite_where=sa.text(UNFLAGGED_SQL),
            postgresql_where=sa.text(UNFLAGGED_SQL),
        )
        batch_op.create_index(
            "ix_jobs_pending",
            ["pending_since"],
            unique=False,
            sqlite_where=sa.text(PENDING_SQL),
            postgresql_where=sa.text(PENDING_SQL),
        )
        batch_op.create_index(
            "ix_jobs_state_submitted_at_id", ["state", "submitted_at", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_jobs_submission_id"), ["submission_id"], unique=False)
        batch_op.create_index("ix_jobs_submitted_at_id", ["submitted_at", "id"], unique=False)
        batch_op.create_index(
            "ix_jobs_type_submitted_at_id", ["type", "submitted_at", "id"], unique=False
        )
        batch_op.create_index(
            "uq_jobs_media_id_type_submitted",
            ["media_id", "type"],
            unique=True,
            sqlite_where=sa.text(CLAIM_PREDICATE),
            postgresql_where=sa.text(CLAIM_PREDICATE),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_jobs_media_id_type_submitted",
            sqlite_where=sa.text(CLAIM_PREDICATE),
            postgresql_where=sa.text(CLAIM_PREDICATE),
        )
        batch_op.drop_index("ix_jobs_type_submitted_at_id")
        batch_op.drop_index("ix_jobs_submitted_at_id")
        batch_op.drop_index(batch_op.f("ix_jobs_submission_id"))
        batch_op.drop_index("ix_jobs_state_submitted_at_id")
        batch_op.drop_index("ix_jobs_pending")
        batch_op.drop_index("ix_jobs_unflagged")
        batch_op.drop_index("ix_jobs_stale_state")
        batch_op.drop_index("ix_jobs_media_id_type")

    op.drop_table("jobs")
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_submissions_media_id"))

    op.drop_table("submissions")
    op.drop_table("leases")
    op.drop_table("heartbeats")
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callback_events_received_at"))
        batch_op.drop_index(
            "ix_callback_events_pending",
            sqlite_where=sa.text("applied IS NULL"),
            postgresql_where=sa.text("applied IS NULL"),
        )
        batch_op.drop_index("ix_callback_events_job_id_received_at")

    op.drop_table("callback_events")
