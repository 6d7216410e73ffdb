"""Notifications: the job change log (filled by triggers on jobs), subscriptions, deliveries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:00:37.438837
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The change log's triggers (tracker/notify/changes.py explains them). Kept verbatim here, not
# imported, so this revision never changes with the code. A later migration that rebuilds `jobs`
# on SQLite (batch mode copies the table) drops its triggers and must create them again;
# tests/notify/test_changes.py checks they exist at head.
CHANGE_TYPE = "'job.' || CASE {row}.state WHEN 'processing' THEN 'submitted' ELSE {row}.state END"
JOB_FIELDS = (
    "job_id",
    "media_id",
    "type",
    "region",
    "state",
    "stale",
    "stale_at",
    "origin",
    "status",
    "code",
    "message",
    "submitted_at",
    "updated_at",
    "completed_at",
    "pending_status",
    "pending_since",
)
COLUMNS = "type, job_row_id, job_id, media_id, previous_state, state, occurred_at, data"


def _snapshot(func: str, row: str, result: str) -> str:
    pairs = ", ".join(f"'{name}', {row}.{name}" for name in JOB_FIELDS)
    return f"{func}({pairs}, 'result', {result})"


# SQLite: row triggers; the single writer commits changes in the order of their ids.
SQLITE_ROW = f"""
INSERT INTO job_changes ({COLUMNS})
VALUES ({{type}}, NEW.id, NEW.job_id, NEW.media_id, {{previous}}, NEW.state, NEW.updated_at,
        {_snapshot("json_object", "NEW", "json(NEW.result)")});
UPDATE job_changes SET seq = id WHERE id = last_insert_rowid();
"""
SQLITE_UPDATE_TYPE = (
    f"CASE WHEN OLD.state IS NOT NEW.state THEN {CHANGE_TYPE.format(row='NEW')} "
    "ELSE 'job.stale' END"
)
SQLITE = [
    f"""
CREATE TRIGGER trg_jobs_change_on_update AFTER UPDATE OF state, stale ON jobs
FOR EACH ROW WHEN OLD.state IS NOT NEW.state OR (NEW.stale AND NOT OLD.stale)
BEGIN
{SQLITE_ROW.format(type=SQLITE_UPDATE_TYPE, previous="OLD.state")}
END
""",
    f"""
CREATE TRIGGER trg_jobs_change_on_insert AFTER INSERT ON jobs
FOR EACH ROW WHEN NEW.state <> 'submitting'
BEGIN
{SQLITE_ROW.format(type=CHANGE_TYPE.format(row="NEW"), previous="NULL")}
END
""",
]

# PostgreSQL: statement triggers over the transition tables (set-based, one INSERT per
# statement), and `seq` drawn at commit under a transaction lock (a deferred constraint
# trigger), so that `seq` order is commit order and a reader never sees a lower `seq` appear
# after a higher one.
PG_SNAPSHOT = _snapshot("jsonb_build_object", "n", "n.result")
SEQUENCE_LOCK = 0x7472_6B63_6867  # "trkchg"
POSTGRESQL = [
    "CREATE SEQUENCE job_changes_seq OWNED BY job_changes.seq",
    f"""
CREATE FUNCTION tracker_record_job_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    INSERT INTO job_changes ({COLUMNS})
    SELECT CASE WHEN n.state IS DISTINCT FROM o.state THEN {CHANGE_TYPE.format(row="n")}
                ELSE 'job.stale' END,
           n.id, n.job_id, n.media_id, o.state, n.state, n.updated_at, {PG_SNAPSHOT}
    FROM new_jobs n JOIN old_jobs o ON o.id = n.id
    WHERE n.state IS DISTINCT FROM o.state OR (n.stale AND NOT o.stale)
    ORDER BY n.id;
  ELSE
    INSERT INTO job_changes ({COLUMNS})
    SELECT {CHANGE_TYPE.format(row="n")}, n.id, n.job_id, n.media_id, NULL, n.state,
           n.updated_at, {PG_SNAPSHOT}
    FROM new_jobs n WHERE n.state <> 'submitting'
    ORDER BY n.id;
  END IF;
  RETURN NULL;
END $$
""",
    """
CREATE TRIGGER trg_jobs_change_on_update AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION tracker_record_job_changes()
""",
    """
CREATE TRIGGER trg_jobs_change_on_insert AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION tracker_record_job_changes()
""",
    f"""
CREATE FUNCTION tracker_sequence_job_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('tracker.changes_sequenced', true) = 'on' THEN
    RETURN NULL;
  END IF;
  PERFORM pg_advisory_xact_lock({SEQUENCE_LOCK});
  UPDATE job_changes c SET seq = s.seq
  FROM (SELECT id, nextval('job_changes_seq') AS seq
        FROM (SELECT id FROM job_changes WHERE seq IS NULL ORDER BY id) AS pending) AS s
  WHERE c.id = s.id;
  PERFORM set_config('tracker.changes_sequenced', 'on', true);
  PERFORM pg_notify('tracker_job_changes', '');
  RETURN NULL;
END $$
""",
    """
CREATE CONSTRAINT TRIGGER trg_job_changes_sequence AFTER INSERT ON job_changes
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION tracker_sequence_job_changes()
""",
]


def upgrade() -> None:
    op.create_table(
        "job_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column(
            "job_row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("media_id", sa.String(length=128), nullable=False),
        sa.Column("previous_state", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_changes")),
        sa.UniqueConstraint("seq", name=op.f("uq_job_changes_seq")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("job_changes", schema=None) as batch_op:
        batch_op.create_index("ix_job_changes_job_row_id_seq", ["job_row_id", "seq"], unique=False)
        batch_op.create_index("ix_job_changes_media_id_seq", ["media_id", "seq"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_job_changes_occurred_at"), ["occurred_at"], unique=False
        )
        batch_op.create_index(
            "ix_job_changes_unsequenced",
            ["id"],
            unique=False,
            sqlite_where=sa.text("seq IS NULL"),
            postgresql_where=sa.text("seq IS NULL"),
        )

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "event_types",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("old_secret", sa.String(length=128), nullable=True),
        sa.Column("old_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("cursor_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_id", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_deliveries_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "subscription_id", "change_seq", name=op.f("uq_deliveries_subscription_id_change_seq")
        ),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_change_seq"), ["change_seq"], unique=False)
        batch_op.create_index(
            "ix_deliveries_due",
            ["subscription_id", "next_attempt_at"],
            unique=False,
            sqlite_where=sa.text("status IN ('pending', 'sending')"),
            postgresql_where=sa.text("status IN ('pending', 'sending')"),
        )
        batch_op.create_index(
            "ix_deliveries_subscription_id_id", ["subscription_id", "id"], unique=False
        )

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_attempts_delivery_id"), ["delivery_id"], unique=False
        )

    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRESQL if postgres else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER trg_job_changes_sequence ON job_changes")
        op.execute("DROP FUNCTION tracker_sequence_job_changes")
        op.execute("DROP TRIGGER trg_jobs_change_on_update ON jobs")
        op.execute("DROP TRIGGER trg_jobs_change_on_insert ON jobs")
        op.execute("DROP FUNCTION tracker_record_job_changes")
    else:
        op.execute("DROP TRIGGER trg_jobs_change_on_update")
        op.execute("DROP TRIGGER trg_jobs_change_on_insert")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_delivery_id"))

    op.drop_table("delivery_attempts")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_subscription_id_id")
        batch_op.drop_index(
            "ix_deliveries_due",
            sqlite_where=sa.text("status IN ('pending', 'sending')"),
            postgresql_where=sa.text("status IN ('pending', 'sending')"),
        )
        batch_op.drop_index(batch_op.f("ix_deliveries_change_seq"))

    op.drop_table("deliveries")
    op.drop_table("subscriptions")
    with op.batch_alter_table("job_changes", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_job_changes_unsequenced",
            sqlite_where=sa.text("seq IS NULL"),
            postgresql_where=sa.text("seq IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_job_changes_occurred_at"))
        batch_op.drop_index("ix_job_changes_media_id_seq")
        batch_op.drop_index("ix_job_changes_job_row_id_seq")

    op.drop_table("job_changes")
