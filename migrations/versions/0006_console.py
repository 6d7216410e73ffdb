"""The console: sign-in sessions, refused callbacks, hourly rollups, job counts, scheduler runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:00:00

The rollups and counts are kept by triggers on the tables whose rows they count (jobs,
job_changes, callback_events, delivery_attempts, callback_refusals, heartbeats), in the
transaction that writes those rows, so a page never scans them. They read only the rows of
those tables, never how the change log's own triggers (0004, 0005) write them. On PostgreSQL
they are statement triggers over transition tables (one upsert per statement and key), and each
connection writes its own shard of a row (pg_backend_pid() % SHARDS), so concurrent writers
seldom wait on one row; readers add the shards up. A later migration that rebuilds one of these
tables on SQLite (batch mode copies it) drops its triggers and must create them again;
tests/console/test_rollups.py checks they exist at head.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept verbatim here (not imported), so this revision never changes with the code;
# tracker/console/rollups.py reads the same edges and a test holds them equal.
DURATION_EDGES = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, 1200, 1800)
DURATION_EDGES += (2700, 3600, 5400, 7200, 10800, 14400, 21600, 43200, 86400)
SHARDS = 16
RUNS_KEPT = 100
FINAL_FOR_DURATION = "('succeeded', 'failed')"


def _bucket(seconds: str) -> str:
    whens = " ".join(f"WHEN {seconds} < {edge} THEN {i}" for i, edge in enumerate(DURATION_EDGES))
    return f"CASE {whens} ELSE {len(DURATION_EDGES)} END"


# --- SQLite: row triggers (SQLite has no other kind), the single writer needs no shards ----------


def _sqlite_hour(column: str) -> str:
    # Times are stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC): the hour in the same form.
    return f"substr({column}, 1, 13) || ':00:00.000000'"


def _sqlite_roll(hour: str, metric: str, key: str, bucket: str = "0", count: str = "1") -> str:
    return f"""
  INSERT INTO console_rollups (hour, metric, key, bucket, shard, count)
  VALUES ({hour}, {metric}, {key}, {bucket}, 0, {count})
  ON CONFLICT (hour, metric, key, bucket, shard)
  DO UPDATE SET count = console_rollups.count + excluded.count;"""


def _sqlite_count(row: str, delta: str) -> str:
    return f"""
  INSERT INTO console_job_counts (type, region, state, stale, shard, count)
  VALUES ({row}.type, coalesce({row}.region, ''), {row}.state, {row}.stale, 0, {delta})
  ON CONFLICT (type, region, state, stale, shard)
  DO UPDATE SET count = console_job_counts.count + excluded.count;"""


# Seconds to the millisecond: julianday's double is some microseconds off at our dates.
SQLITE_DURATION = "round((julianday(NEW.occurred_at) - julianday(j.submitted_at)) * 86400.0, 3)"
SQLITE_CALLBACK_KIND = "CASE WHEN NEW.reason LIKE 'malformed:%' THEN 'refused' ELSE 'received' END"

SQLITE = [
    f"""
CREATE TRIGGER trg_console_jobs_insert AFTER INSERT ON jobs
BEGIN{_sqlite_count("NEW", "1")}
END""",
    f"""
CREATE TRIGGER trg_console_jobs_delete AFTER DELETE ON jobs
BEGIN{_sqlite_count("OLD", "-1")}
END""",
    f"""
CREATE TRIGGER trg_console_jobs_update AFTER UPDATE OF type, region, state, stale ON jobs
WHEN OLD.type IS NOT NEW.type OR OLD.region IS NOT NEW.region OR OLD.state IS NOT NEW.state
  OR OLD.stale IS NOT NEW.stale
BEGIN{_sqlite_count("OLD", "-1")}{_sqlite_count("NEW", "1")}
END""",
    f"""
CREATE TRIGGER trg_console_changes AFTER INSERT ON job_changes
BEGIN{_sqlite_roll(_sqlite_hour("NEW.occurred_at"), "'changes'", "NEW.type")}
  INSERT INTO console_rollups (hour, metric, key, bucket, shard, count)
  SELECT {_sqlite_hour("NEW.occurred_at")}, 'duration', j.type, {_bucket(SQLITE_DURATION)}, 0, 1
  FROM jobs j WHERE j.id = NEW.job_row_id AND NEW.state IN {FINAL_FOR_DURATION}
  ON CONFLICT (hour, metric, key, bucket, shard)
  DO UPDATE SET count = console_rollups.count + excluded.count;
END""",
    f"""
CREATE TRIGGER trg_console_callbacks_insert AFTER INSERT ON callback_events
BEGIN{_sqlite_roll(_sqlite_hour("NEW.received_at"), "'callbacks'", SQLITE_CALLBACK_KIND)}
END""",
    # A repeated delivery raises `deliveries` (the inbox's upsert); counted in the hour the
    # event was first received, as VOD repeats within seconds (vod-reference.md 6.5).
    f"""
CREATE TRIGGER trg_console_callbacks_repeat AFTER UPDATE OF deliveries ON callback_events
WHEN NEW.deliveries > OLD.deliveries
BEGIN{
        _sqlite_roll(
            _sqlite_hour("NEW.received_at"),
            "'callbacks'",
            "'repeated'",
            count="NEW.deliveries - OLD.deliveries",
        )
    }
END""",
    f"""
CREATE TRIGGER trg_console_refusals AFTER INSERT ON callback_refusals
BEGIN{_sqlite_roll(_sqlite_hour("NEW.received_at"), "'callbacks'", "'refused'", count="NEW.count")}
END""",
    f"""
CREATE TRIGGER trg_console_attempts AFTER INSERT ON delivery_attempts
BEGIN{
        _sqlite_roll(
            _sqlite_hour("NEW.attempted_at"),
            "'deliveries'",
            "CASE WHEN NEW.status_code BETWEEN 200 AND 299 THEN 'sent' ELSE 'failed' END",
        )
    }
END""",
    f"""
CREATE TRIGGER trg_console_scheduler_runs AFTER UPDATE OF finished_at ON heartbeats
WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NOT NEW.finished_at
BEGIN
  INSERT INTO scheduler_runs (name, owner, started_at, finished_at, duration_s, ok, summary)
  VALUES (NEW.name, NEW.owner, NEW.started_at, NEW.finished_at, NEW.duration_s, NEW.ok,
          NEW.summary);
  DELETE FROM scheduler_runs WHERE name = NEW.name AND id < (
    SELECT min(id) FROM (
      SELECT id FROM scheduler_runs WHERE name = NEW.name ORDER BY id DESC LIMIT {RUNS_KEPT}));
END""",
]

# --- PostgreSQL: statement triggers over transition tables, sharded rows -------------------------

SHARD = f"pg_backend_pid() % {SHARDS}"


def _pg_hour(column: str) -> str:
    return f"date_trunc('hour', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"


def _pg_roll(rows: str) -> str:
    """Upsert `rows` (hour, metric, key, bucket, n), grouped and in key order: concurrent
    statements lock the rows they share in one order."""
    return f"""
  INSERT INTO console_rollups AS r (hour, metric, key, bucket, shard, count)
  SELECT hour, metric, key, bucket, {SHARD}, sum(n) FROM ({rows}) AS d
  GROUP BY hour, metric, key, bucket HAVING sum(n) <> 0 ORDER BY hour, metric, key, bucket
  ON CONFLICT (hour, metric, key, bucket, shard) DO UPDATE SET count = r.count + excluded.count;"""


def _pg_function(name: str, body: str, *, hash_joins: bool = False) -> str:
    """`hash_joins` for a function that joins its two transition tables: PL/pgSQL caches the
    plan per connection, and the one cached after a one-row update is a nested loop, quadratic
    on the next bulk update (migration 0005 says why, for the change log's own function)."""
    setting = "\nSET enable_nestloop = off" if hash_joins else ""
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql{setting} AS $$
BEGIN{body}
  RETURN NULL;
END $$"""


def _pg_counts(rows: str) -> str:
    return f"""
  INSERT INTO console_job_counts AS c (type, region, state, stale, shard, count)
  SELECT type, region, state, stale, {SHARD}, sum(n) FROM ({rows}) AS d
  GROUP BY type, region, state, stale HAVING sum(n) <> 0 ORDER BY type, region, state, stale
  ON CONFLICT (type, region, state, stale, shard) DO UPDATE SET count = c.count + excluded.count;"""


def _key(row: str, n: str) -> str:
    region = f"coalesce({row}.region, '') AS region"
    return f"SELECT {row}.type, {region}, {row}.state, {row}.stale, {n} AS n"


MOVED = (
    "FROM new_jobs nj JOIN old_jobs oj ON oj.id = nj.id "
    "WHERE (nj.type, coalesce(nj.region, ''), nj.state, nj.stale) IS DISTINCT FROM "
    "(oj.type, coalesce(oj.region, ''), oj.state, oj.stale)"
)
PG_DURATION = "extract(epoch FROM c.occurred_at - j.submitted_at)"
PG_CALLBACK_KIND = "CASE WHEN e.reason LIKE 'malformed:%' THEN 'refused' ELSE 'received' END"

POSTGRESQL = [
    _pg_function(
        "tracker_console_count_jobs",
        f"""
  IF TG_OP = 'INSERT' THEN{_pg_counts(f"{_key('nj', '1')} FROM new_jobs nj")}
  ELSIF TG_OP = 'DELETE' THEN{_pg_counts(f"{_key('oj', '-1')} FROM old_jobs oj")}
  ELSE{_pg_counts(f"{_key('nj', '1')} {MOVED} UNION ALL {_key('oj', '-1')} {MOVED}")}
  END IF;""",
        hash_joins=True,
    ),
    """
CREATE TRIGGER trg_jobs_console_counts_insert AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION tracker_console_count_jobs()""",
    """
CREATE TRIGGER trg_jobs_console_counts_update AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION tracker_console_count_jobs()""",
    """
CREATE TRIGGER trg_jobs_console_counts_delete AFTER DELETE ON jobs
REFERENCING OLD TABLE AS old_jobs
FOR EACH STATEMENT EXECUTE FUNCTION tracker_console_count_jobs()""",
    _pg_function(
        "tracker_console_roll_changes",
        _pg_roll(
            f"SELECT {_pg_hour('c.occurred_at')} AS hour, 'changes' AS metric, c.type AS key, "
            "0 AS bucket, 1 AS n FROM new_changes c "
            f"UNION ALL SELECT {_pg_hour('c.occurred_at')}, 'duration', j.type, "
            f"{_bucket(PG_DURATION)}, 1 FROM new_changes c JOIN jobs j ON j.id = c.job_row_id "
            f"WHERE c.state IN {FINAL_FOR_DURATION}"
        ),
    ),
    """
CREATE TRIGGER trg_job_changes_console AFTER INSERT ON job_changes
REFERENCING NEW TABLE AS new_changes
FOR EACH STATEMENT EXECUTE FUNCTION tracker_console_roll_changes()""",
    _pg_function(
        "tracker_console_roll_callbacks",
        f"""
  IF TG_OP = 'INSERT' THEN{
            _pg_roll(
                f"SELECT {_pg_hour('e.received_at')} AS hour, 'callbacks' AS metric, "
                f"{PG_CALLBACK_KIND} AS key, 0 AS bucket, 1 AS n FROM new_events e"
            )
        }
  ELSE{
            _pg_roll(
                f"SELECT {_pg_hour('e.received_at')} AS hour, 'callbacks' AS metric, "
                "'repeated' AS key, 0 AS bucket, e.deliveries - o.deliveries AS n "
                "FROM new_events e JOIN old_events o ON o.id = e.id "
                "WHERE e.deliveries > o.deliveries"
            )
        }
  END IF;""",
        hash_joins=True,
    ),
    """
CREATE TRIGGER trg_callback_events_console_insert AFTER INSERT ON callback_events
REFERENCING NEW TABLE AS new_events
FOR EACH STATEMENT EXECUTE FUNCTION tracker_console_roll_callbacks()""",
    """
CREATE TRIGGER trg_callback_events_console_update AFTER UPDATE ON callback_events
REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events
FOR EACH STATEMENT EXECUTE FUNCTION tracker_console_roll_callbacks()""",
    _pg_function(
        "tracker_console_roll_refusals",
        _pg_roll(
            f"SELECT {_pg_hour('f.received_at')} AS hour, 'callbacks' AS metric, "
            "'refused' AS key, 0 AS bucket, f.count AS n FROM new_refusals f"
        ),
    ),
    """
CREATE TRIGGER trg_callback_refusals_console AFTER INSERT ON callback_refusals
REFERENCING NEW TABLE AS new_refusals
FOR EACH STATEMENT EXECUTE FUNCTION tracker_console_roll_refusals()""",
    _pg_function(
        "tracker_console_roll_attempts",
        _pg_roll(
            f"SELECT {_pg_hour('a.attempted_at')} AS hour, 'deliveries' AS metric, "
            "CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 'sent' ELSE 'failed' END AS key, "
            "0 AS bucket, 1 AS n FROM new_attempts a"
        ),
    ),
    """
CREATE TRIGGER trg_delivery_attempts_console AFTER INSERT ON delivery_attempts
REFERENCING NEW TABLE AS new_attempts
FOR EACH STATEMENT EXECUTE FUNCTION tracker_console_roll_attempts()""",
    _pg_function(
        "tracker_console_scheduler_run",
        f"""
  IF NEW.finished_at IS NOT NULL AND NEW.finished_at IS DISTINCT FROM OLD.finished_at THEN
    INSERT INTO scheduler_runs (name, owner, started_at, finished_at, duration_s, ok, summary)
    VALUES (NEW.name, NEW.owner, NEW.started_at, NEW.finished_at, NEW.duration_s, NEW.ok,
            NEW.summary);
    DELETE FROM scheduler_runs WHERE name = NEW.name AND id < (
      SELECT min(id) FROM (
        SELECT id FROM scheduler_runs WHERE name = NEW.name ORDER BY id DESC LIMIT {RUNS_KEPT}
      ) AS kept);
  END IF;""",
    ),
    """
CREATE TRIGGER trg_heartbeats_console AFTER UPDATE ON heartbeats
FOR EACH ROW EXECUTE FUNCTION tracker_console_scheduler_run()""",
]

# What is already there when the migration runs: counted once, before the triggers count the rest.
BACKFILL_COUNTS = """
INSERT INTO console_job_counts (type, region, state, stale, shard, count)
SELECT type, coalesce(region, ''), state, stale, 0, count(*) FROM jobs
GROUP BY type, coalesce(region, ''), state, stale"""


def _backfill_rollups(postgres: bool) -> list[str]:
    h = _pg_hour if postgres else _sqlite_hour
    duration = (
        "extract(epoch FROM c.occurred_at - j.submitted_at)"
        if postgres
        else "round((julianday(c.occurred_at) - julianday(j.submitted_at)) * 86400.0, 3)"
    )
    roll = "INSERT INTO console_rollups (hour, metric, key, bucket, shard, count) "
    return [
        f"{roll}SELECT {h('c.occurred_at')}, 'changes', c.type, 0, 0, count(*) FROM job_changes c"
        " GROUP BY 1, 2, 3",
        f"{roll}SELECT {h('c.occurred_at')}, 'duration', j.type, {_bucket(duration)}, 0, "
        f"count(*) FROM job_changes c JOIN jobs j ON j.id = c.job_row_id "
        f"WHERE c.state IN {FINAL_FOR_DURATION} GROUP BY 1, 2, 3, 4",
        f"{roll}SELECT hour, 'callbacks', key, 0, 0, sum(n) FROM ("
        f"SELECT {h('received_at')} AS hour, CASE WHEN reason LIKE 'malformed:%' "
        "THEN 'refused' ELSE 'received' END AS key, 1 AS n FROM callback_events "
        f"UNION ALL SELECT {h('received_at')}, 'repeated', deliveries - 1 FROM callback_events "
        "WHERE deliveries > 1) AS d GROUP BY 1, 2, 3",
        f"{roll}SELECT {h('attempted_at')}, 'deliveries', CASE WHEN status_code BETWEEN 200 AND "
        "299 THEN 'sent' ELSE 'failed' END, 0, 0, count(*) FROM delivery_attempts "
        "GROUP BY 1, 2, 3",
    ]


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:  # nothing may change between the backfill and the triggers that follow it
        op.execute(
            "LOCK TABLE jobs, job_changes, callback_events, delivery_attempts, heartbeats "
            "IN SHARE ROW EXCLUSIVE MODE"
        )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_console_sessions_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "callback_refusals",
        sa.Column("id", BigId, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=True),
        sa.Column("signed_over", sa.Text(), nullable=True),
        sa.Column("detail", Json, nullable=False),
        sa.Column("count", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_refusals")),
    )
    with op.batch_alter_table("callback_refusals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_callback_refusals_received_at"), ["received_at"], unique=False
        )
    op.create_table(
        "console_rollups",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "hour", "metric", "key", "bucket", "shard", name=op.f("pk_console_rollups")
        ),
    )
    op.create_table(
        "console_job_counts",
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "type", "region", "state", "stale", "shard", name=op.f("pk_console_job_counts")
        ),
    )
    op.create_table(
        "scheduler_runs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_runs")),
    )
    with op.batch_alter_table("scheduler_runs", schema=None) as batch_op:
        batch_op.create_index("ix_scheduler_runs_name_id", ["name", "id"], unique=False)

    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_callback_events_not_applied",
            ["received_at"],
            unique=False,
            sqlite_where=sa.text("applied = false"),
            postgresql_where=sa.text("applied = false"),
        )

    op.execute(BACKFILL_COUNTS)
    for statement in _backfill_rollups(postgres):
        op.execute(statement)
    for statement in POSTGRESQL if postgres else SQLITE:
        op.execute(statement)


PG_TRIGGERS = {
    "trg_jobs_console_counts_insert": "jobs",
    "trg_jobs_console_counts_update": "jobs",
    "trg_jobs_console_counts_delete": "jobs",
    "trg_job_changes_console": "job_changes",
    "trg_callback_events_console_insert": "callback_events",
    "trg_callback_events_console_update": "callback_events",
    "trg_callback_refusals_console": "callback_refusals",
    "trg_delivery_attempts_console": "delivery_attempts",
    "trg_heartbeats_console": "heartbeats",
}
PG_FUNCTIONS = (
    "tracker_console_count_jobs",
    "tracker_console_roll_changes",
    "tracker_console_roll_callbacks",
    "tracker_console_roll_refusals",
    "tracker_console_roll_attempts",
    "tracker_console_scheduler_run",
)
SQLITE_TRIGGERS = (
    "trg_console_jobs_insert",
    "trg_console_jobs_delete",
    "trg_console_jobs_update",
    "trg_console_changes",
    "trg_console_callbacks_insert",
    "trg_console_callbacks_repeat",
    "trg_console_refusals",
    "trg_console_attempts",
    "trg_console_scheduler_runs",
)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in PG_TRIGGERS.items():
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
        for function in PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION {function}")
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {trigger}")
    with op.batch_alter_table("callback_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_callback_events_not_applied",
            sqlite_where=sa.text("applied = false"),
            postgresql_where=sa.text("applied = false"),
        )
    with op.batch_alter_table("scheduler_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_scheduler_runs_name_id")
    op.drop_table("scheduler_runs")
    op.drop_table("console_job_counts")
    op.drop_table("console_rollups")
    with op.batch_alter_table("callback_refusals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callback_refusals_received_at"))
    op.drop_table("callback_refusals")
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sessions_expires_at"))
    op.drop_table("console_sessions")
