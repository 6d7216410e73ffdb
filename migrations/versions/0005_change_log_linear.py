"""The change log at scale: linear on PostgreSQL whatever ran before, cheaper per row on SQLite.

PostgreSQL: the statement trigger joins its transition tables, and PL/pgSQL plans that join once
per connection, with the row counts of its first call. After a one-row update the cached plan is
a nested loop, and the next bulk update through that connection was quadratic (20,000 rows: 0.9 s
on a fresh connection, 46 s after a one-row update). The function now runs with nested loops
disabled, so whatever plan is cached is a hash or merge join: linear (n log n at worst) for any
count. A set-based join stays cheaper per row than a row trigger, and unlike EXECUTE it is not
planned again for every statement (every callback).

SQLite: each change was an INSERT followed by an UPDATE that set `seq` to the new id, which
writes the row and four of its index entries twice; the INSERT now takes the id and `seq` at once.
The (media_id, seq) index goes: its keys are random, so every change dirtied a page of its own in
it (most of the stale sweep's writes); the feed filters a media through its jobs instead.

Both: a `job.stale` change happens when the job is flagged, so it takes `stale_at` as its time, not
the job's `updated_at` (the job's last update, which the sweep does not touch). An old time there
misdated the event and made retention prune the changes numbered before it.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence
from types import ModuleType

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _v0004() -> ModuleType:
    """Migration 0004's module: its field list, change types and the triggers a downgrade
    restores, taken as written there (a revision never changes)."""
    script = op.get_context().script
    assert script is not None
    return script.get_revision("0004").module


def _snapshot(v0004: ModuleType, func: str, row: str, result: str) -> str:
    return str(v0004._snapshot(func, row, result))


# SQLite: the id (and so `seq`) the AUTOINCREMENT table gives its next row: one past the largest
# id it ever had, which is the larger of the last row and `sqlite_sequence` (rows pruned).
# `sqlite_sequence` is written at the end of each statement; `max(id)` covers the rows this
# statement's triggers have inserted so far.
SQLITE_NEXT_ID = (
    "(SELECT max(coalesce((SELECT max(id) FROM job_changes), 0), "
    "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'job_changes'), 0)) + 1)"
)


def _sqlite(v0004: ModuleType) -> list[str]:
    snapshot = _snapshot(v0004, "json_object", "NEW", "json(NEW.result)")
    state_changed = "OLD.state IS NOT NEW.state"
    update_type = (
        f"CASE WHEN {state_changed} THEN {v0004.CHANGE_TYPE.format(row='NEW')} ELSE 'job.stale' END"
    )
    # A flag set without its time (by hand, say) is dated by the row's update, never refused.
    stale_at = "coalesce(NEW.stale_at, NEW.updated_at)"
    occurred = f"CASE WHEN {state_changed} THEN NEW.updated_at ELSE {stale_at} END"

    def row(type_: str, previous: str, occurred_at: str) -> str:
        return f"""
INSERT INTO job_changes (id, seq, {v0004.COLUMNS})
VALUES ({SQLITE_NEXT_ID}, {SQLITE_NEXT_ID}, {type_}, NEW.id, NEW.job_id, NEW.media_id,
        {previous}, NEW.state, {occurred_at}, {snapshot});
"""

    return [
        f"""
CREATE TRIGGER trg_jobs_change_on_update AFTER UPDATE OF state, stale ON jobs
FOR EACH ROW WHEN {state_changed} OR (NEW.stale AND NOT OLD.stale)
BEGIN
{row(update_type, "OLD.state", occurred)}
END
""",
        f"""
CREATE TRIGGER trg_jobs_change_on_insert AFTER INSERT ON jobs
FOR EACH ROW WHEN NEW.state <> 'submitting'
BEGIN
{row(v0004.CHANGE_TYPE.format(row="NEW"), "NULL", "NEW.updated_at")}
END
""",
    ]


def _postgresql(v0004: ModuleType) -> str:
    """0004's statement function, its UPDATE branch dating stale flags by `stale_at`, run with
    nested loops off (see the module docstring)."""
    snapshot = _snapshot(v0004, "jsonb_build_object", "n", "n.result")
    columns, change_type = v0004.COLUMNS, v0004.CHANGE_TYPE
    return f"""
CREATE OR REPLACE FUNCTION tracker_record_job_changes() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off
AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    INSERT INTO job_changes ({columns})
    SELECT CASE WHEN n.state IS DISTINCT FROM o.state THEN {change_type.format(row="n")}
                ELSE 'job.stale' END,
           n.id, n.job_id, n.media_id, o.state, n.state,
           CASE WHEN n.state IS DISTINCT FROM o.state THEN n.updated_at
                ELSE coalesce(n.stale_at, n.updated_at) END,
           {snapshot}
    FROM new_jobs n JOIN old_jobs o ON o.id = n.id
    WHERE n.state IS DISTINCT FROM o.state OR (n.stale AND NOT o.stale)
    ORDER BY n.id;
  ELSE
    INSERT INTO job_changes ({columns})
    SELECT {change_type.format(row="n")}, n.id, n.job_id, n.media_id, NULL, n.state,
           n.updated_at, {snapshot}
    FROM new_jobs n WHERE n.state <> 'submitting'
    ORDER BY n.id;
  END IF;
  RETURN NULL;
END $$
"""


def _postgresql_0004(v0004: ModuleType) -> str:
    start = "CREATE FUNCTION tracker_record_job_changes()"
    (function,) = (s for s in v0004.POSTGRESQL if s.lstrip().startswith(start))
    return str(function).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    v0004 = _v0004()
    op.drop_index("ix_job_changes_media_id_seq", table_name="job_changes")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_postgresql(v0004))
        return
    op.execute("DROP TRIGGER trg_jobs_change_on_update")
    op.execute("DROP TRIGGER trg_jobs_change_on_insert")
    for statement in _sqlite(v0004):
        op.execute(statement)


def downgrade() -> None:
    v0004 = _v0004()
    if op.get_bind().dialect.name == "postgresql":
        # CREATE OR REPLACE sets the whole definition: the SET clause goes with it.
        op.execute(_postgresql_0004(v0004))
    else:
        op.execute("DROP TRIGGER trg_jobs_change_on_update")
        op.execute("DROP TRIGGER trg_jobs_change_on_insert")
        for statement in v0004.SQLITE:
            op.execute(statement)
    op.create_index("ix_job_changes_media_id_seq", "job_changes", ["media_id", "seq"], unique=False)
