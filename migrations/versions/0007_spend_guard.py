"""The spend guard: a job's duration, the budget ledger, and the duration in the change log.

`jobs.duration_s` holds the seconds of video VOD reported before the job was submitted;
`budgets` holds the minutes reserved per UTC day and job type (tracker/submit/budget.py).

The change log's triggers (0004, then 0005) copy a job into each change's `data`; that copy must
carry `duration_s` too, as the job JSON does. Their text belongs to those revisions, so this one
does not restate it: it reads the triggers as installed and adds the one field after
`pending_since`, whatever version of them it finds (and takes it out again on downgrade). It
fails loudly if it finds nothing to change.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_FUNCTION = "tracker_record_job_changes"


def _field(row: str, *, with_duration: bool) -> str:
    pending = f"'pending_since', {row}.pending_since"
    return f"{pending}, 'duration_s', {row}.duration_s" if with_duration else pending


def _rewrite(sql: str, row: str, *, add: bool) -> str:
    old, new = _field(row, with_duration=not add), _field(row, with_duration=add)
    if old not in sql:
        raise RuntimeError(f"migration 0007: the change log trigger has no {old!r} to change")
    return sql.replace(old, new)


def _change_log_snapshots(*, add: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        definition = bind.execute(
            sa.text("SELECT pg_get_functiondef(CAST(:name AS regproc))"), {"name": PG_FUNCTION}
        ).scalar_one()
        # pg_get_functiondef gives a complete CREATE OR REPLACE, its SET options included.
        op.execute(sa.text(_rewrite(definition, "n", add=add)))
        return
    # SQLite: row triggers on jobs; those of the change log are the ones copying the job.
    triggers = bind.execute(
        sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'jobs'")
    ).all()
    old = _field("NEW", with_duration=not add)
    mine = [(name, sql) for name, sql in triggers if "job_changes" in sql and old in sql]
    if not mine:
        raise RuntimeError("migration 0007: no change log trigger on jobs to change")
    for name, sql in mine:
        op.execute(sa.text(f'DROP TRIGGER "{name}"'))
        op.execute(sa.text(_rewrite(sql, "NEW", add=add)))


def upgrade() -> None:
    op.add_column("jobs", sa.Column("duration_s", sa.Float(), nullable=True))
    op.create_table(
        "budgets",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("used_ms", sa.BigInteger(), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("limit_ms", sa.BigInteger(), nullable=True),
        sa.Column("exhausted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "type", name=op.f("pk_budgets")),
    )
    _change_log_snapshots(add=True)


def downgrade() -> None:
    _change_log_snapshots(add=False)  # first: SQLite drops no column a trigger reads
    op.drop_table("budgets")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("jobs", "duration_s")
    else:
        # Natively (SQLite 3.35+), not by batch mode's copy of the table, which would drop
        # every trigger on jobs (the change log's and the console's).
        op.execute(sa.text("ALTER TABLE jobs DROP COLUMN duration_s"))
