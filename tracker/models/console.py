"""The console's tables (tracker/console/, migration 0006): sessions, refused callbacks, hourly
rollups, job counts and scheduler runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tracker.models.base import Base, BigId
from tracker.models.jobs import CallbackEvent

# --- the console (tracker/console/): sessions, refused callbacks, rollups (migration 0006) ------


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds a random id whose hash is the key here, so signing
    out (deleting the row) ends it on the server, whatever copy of the cookie survives."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's id
    # HMAC of the API token it signed in with: the session ends when that token is withdrawn.
    token_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class CallbackRefusal(Base):
    """A callback answered with an error before it reached the inbox (bad or missing signature,
    stale timestamp, wrong URL, too large), kept for the console's inbox page. Bounded: the
    receiver keeps the last REFUSALS_KEPT and nothing older than a day (tracker/ingest/
    refusals.py). Never a secret: `signed_over` names the AuthKey, it does not hold it."""

    __tablename__ = "callback_refusals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    remote: Mapped[str | None] = mapped_column(String(64))
    # What VOD's signature is computed over, as this tracker computes it (URL|timestamp|key).
    signed_over: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]]
    # This refusal and those not recorded one by one since the last row (a flood is sampled).
    count: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))


# Stored callbacks that were not applied, for the console's inbox; literal SQL like UNFLAGGED_SQL.
NOT_APPLIED_SQL = "applied = false"
Index(
    "ix_callback_events_not_applied",
    CallbackEvent.received_at,
    sqlite_where=text(NOT_APPLIED_SQL),
    postgresql_where=text(NOT_APPLIED_SQL),
)


class Rollup(Base):
    """Hourly counts for the console's charts, kept by triggers in the transaction of what they
    count (migration 0006): changes by type, time to a result by job type (a histogram),
    callbacks received, repeated and refused, delivery attempts. `shard` spreads concurrent
    writers of one hour over several rows on PostgreSQL; readers add the shards up."""

    __tablename__ = "console_rollups"

    hour: Mapped[datetime] = mapped_column(primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class JobCount(Base):
    """How many jobs there are of each type, region (empty: none yet), state and stale flag,
    kept by triggers on `jobs` (migration 0006) so the console counts without a scan."""

    __tablename__ = "console_job_counts"

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(32), primary_key=True)
    stale: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class SchedulerRun(Base):
    """The last runs of each scheduled job, copied from `heartbeats` by a trigger as each run
    finishes (the heartbeat keeps only the latest); at most RUNS_KEPT per job."""

    __tablename__ = "scheduler_runs"
    __table_args__ = (Index("ix_scheduler_runs_name_id", "name", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    duration_s: Mapped[float | None] = mapped_column(Float)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    summary: Mapped[str | None] = mapped_column(Text)
