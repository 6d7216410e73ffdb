"""PostgreSQL: trigger plans that cost what a change costs, whatever ran before on the connection.

The console's rollup of finished jobs' durations (0006) looks each change's job up in `jobs`.
It fires inside the change log's function, whose `enable_nestloop = off` (0005) it inherited, so
it could not look jobs up by key: it hashed the whole table. At 1,000,000 jobs, every callback
that finished a job paid about 90 ms for that scan, and 400 ms once a bulk update had cached the
plan on the connection. It now looks jobs up by primary key (a nested loop, and only that), which
is linear in the changes for any count.

The plans PL/pgSQL caches per connection keep the row counts of their first call: after a bulk
update, the change log's statement was costed for the bulk and compiled by JIT at every later
call (0.5 s for 1,000 rows, 13 ms without). The tracker's trigger functions run without JIT.

Numbering a transaction's changes at commit finds them by `seq IS NULL`. Every change numbered
leaves a dead NULL entry in the indexes on `seq` until VACUUM, and the bitmap scan the planner
chose walks all of them at every commit (250 ms a commit after 1,000,000 changes) without ever
marking them dead; a plain index scan marks them as it passes, so the next one skips them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = (
    "tracker_record_job_changes",
    "tracker_sequence_job_changes",
    "tracker_console_count_jobs",
    "tracker_console_roll_changes",
    "tracker_console_roll_callbacks",
    "tracker_console_roll_refusals",
    "tracker_console_roll_attempts",
    "tracker_console_scheduler_run",
)
BY_KEY = ("enable_nestloop = on", "enable_hashjoin = off", "enable_mergejoin = off")
NO_BITMAP = "enable_bitmapscan = off"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite's triggers are row triggers: each looks its job up by key already
    for name in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {name}() SET jit = off")
    op.execute(f"ALTER FUNCTION tracker_console_roll_changes() SET {' SET '.join(BY_KEY)}")
    op.execute(f"ALTER FUNCTION tracker_sequence_job_changes() SET {NO_BITMAP}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    resets = " ".join(f"RESET {setting.split(' = ')[0]}" for setting in BY_KEY)
    op.execute(f"ALTER FUNCTION tracker_console_roll_changes() {resets}")
    op.execute("ALTER FUNCTION tracker_sequence_job_changes() RESET enable_bitmapscan")
    for name in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {name}() RESET jit")
