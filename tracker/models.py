"""The tracker's tables: jobs, submissions, the callback inbox, leases, heartbeats, and the
change log, subscriptions and deliveries of notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobState(StrEnum):
    SUBMITTING = "submitting"
    SUBMIT_FAILED = "submit_failed"
    SUBMIT_UNKNOWN = "submit_unknown"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"


# A job in one of these has not heard its outcome yet; the sweeper watches them.
UNFINISHED = (JobState.SUBMITTING, JobState.SUBMIT_UNKNOWN, JobState.PROCESSING)
# The sweep's working set: unfinished jobs not flagged yet. Literal SQL, not bound parameters, so
# that SQLite and PostgreSQL can prove a query implies it and use the partial index below.
UNFLAGGED_SQL = "NOT stale AND state IN ('submitting', 'submit_unknown', 'processing')"
PENDING_SQL = "pending_status IS NOT NULL"
# Outcomes that nothing may overwrite. `lost` is not among them: VOD may still tell us the truth.
FINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.SUBMIT_FAILED)


# Rows in `uq_jobs_media_id_type_submitted`: they block submitting that media and type again.
CLAIM_PREDICATE = "origin = 'submitted' AND state <> 'submit_failed' AND superseded_at IS NULL"


class Origin(StrEnum):
    SUBMITTED = "submitted"
    CALLBACK = "callback"


class SubmissionState(StrEnum):
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    SUBMIT_FAILED = "submit_failed"
    SUBMIT_UNKNOWN = "submit_unknown"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on PostgreSQL (timestamptz) and SQLite (naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: Json}


class Submission(Base):
    """One SubmitAIJob call, recorded before VOD is called so a crash mid-call stays visible."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    media_id: Mapped[str] = mapped_column(String(128), index=True)
    types: Mapped[list[str]] = mapped_column(Json)
    config: Mapped[dict[str, Any] | None]
    user_data: Mapped[dict[str, Any] | None]
    state: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(128))
    message: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Job(Base):
    """One media and AI type we asked VOD for, or learned of from VOD."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_submitted_at_id", "submitted_at", "id"),
        Index("ix_jobs_state_submitted_at_id", "state", "submitted_at", "id"),
        Index("ix_jobs_type_submitted_at_id", "type", "submitted_at", "id"),
        Index("ix_jobs_region_submitted_at_id", "region", "submitted_at", "id"),
        Index("ix_jobs_media_id_type", "media_id", "type"),
        Index("ix_jobs_stale_state", "stale", "state"),
        # At most one submitted job per media and type that is live or done: two submitters of
        # the same media race on this index, not on a read (tracker/submit/service.py). A refused
        # submission leaves it; `--force` takes the old job out by setting `superseded_at`.
        Index(
            "uq_jobs_media_id_type_submitted",
            "media_id",
            "type",
            unique=True,
            sqlite_where=text(CLAIM_PREDICATE),
            postgresql_where=text(CLAIM_PREDICATE),
        ),
        # The sweep and reconciliation read only rows in flight: these stay small on a big table.
        Index(
            "ix_jobs_unflagged",
            "state",
            "submitted_at",
            sqlite_where=text(UNFLAGGED_SQL),
            postgresql_where=text(UNFLAGGED_SQL),
        ),
        Index(
            "ix_jobs_pending",
            "pending_since",
            sqlite_where=text(PENDING_SQL),
            postgresql_where=text(PENDING_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"), index=True)
    media_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    # The VOD region it was submitted in (vod-reference.md 1.1). None for a job VOD told us of
    # by callback (its body names no region) until reconciliation finds it in one.
    region: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32))
    origin: Mapped[str] = mapped_column(String(16))
    stale: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    stale_at: Mapped[datetime | None]
    status: Mapped[str | None] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(128))
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any | None] = mapped_column(Json)
    config: Mapped[dict[str, Any] | None]
    user_data: Mapped[dict[str, Any] | None]
    # VOD's time for the outcome last applied; an older event changes nothing.
    event_time: Mapped[datetime | None]
    # A callback outcome waiting for ListAIJob to confirm it (the body of a callback is unsigned).
    pending_status: Mapped[str | None] = mapped_column(String(32))
    pending_since: Mapped[datetime | None]
    submitted_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    # Set when `tracker submit --force` resubmitted this media and type as a new job.
    superseded_at: Mapped[datetime | None]


# A stored callback's `reason` once reconciliation has checked it against VOD's ListAIJob.
CONFIRMED = "confirmed_by_vod"
CONTRADICTED = "contradicted_by_vod"
# Callbacks awaiting VOD's confirmation (`Applied.PENDING` in tracker/transitions): literal SQL
# for the partial index below, which reconciliation reads to find the JobIds no job has yet.
UNCONFIRMED_SQL = "reason = 'pending_confirmation'"


class CallbackEvent(Base):
    """The inbox: every callback body we acknowledged, stored before the 200 went out."""

    __tablename__ = "callback_events"
    __table_args__ = (
        Index("ix_callback_events_job_id_received_at", "job_id", "received_at"),
        Index(
            "ix_callback_events_pending",
            "id",
            sqlite_where=text("applied IS NULL"),
            postgresql_where=text("applied IS NULL"),
        ),
        Index(
            "ix_callback_events_unconfirmed",
            "job_id",
            sqlite_where=text(UNCONFIRMED_SQL),
            postgresql_where=text(UNCONFIRMED_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(128))
    media_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str | None] = mapped_column(String(32))
    event_time: Mapped[datetime | None]
    body: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, Any]]
    received_at: Mapped[datetime] = mapped_column(index=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    # None: not looked at yet; True: applied; False: not applied, `reason` says why.
    applied: Mapped[bool | None] = mapped_column(Boolean)
    applied_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(255))


class Lease(Base):
    """A named lock with an expiry, so one replica at a time runs a singleton job."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


class Heartbeat(Base):
    """When each scheduled job last ran, how long it took and what it did."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    summary: Mapped[str | None] = mapped_column(Text)


# --- notifications (tracker/notify/) ------------------------------------------------------------

# Deliveries the relay may have to send: waiting for their time, or leased (taken again when the
# lease expires). Literal SQL for the partial index, like UNFLAGGED_SQL.
DELIVERY_DUE_SQL = "status IN ('pending', 'sending')"


class JobChange(Base):
    """The change log (a transactional outbox): one row per change of a job's state or stale
    flag, written by database triggers on `jobs` in the transaction of the change (migrations
    0004, 0005). `seq` orders the log as the changes were committed; `data` is the job as it was."""

    __tablename__ = "job_changes"
    __table_args__ = (
        Index("ix_job_changes_job_row_id_seq", "job_row_id", "seq"),
        # No (media_id, seq) index: its random keys cost every change a page write of its own
        # (migration 0005); a media's changes are found through its jobs.
        # PostgreSQL numbers a transaction's changes as it commits; until then `seq` is NULL.
        Index(
            "ix_job_changes_unsequenced",
            "id",
            sqlite_where=text("seq IS NULL"),
            postgresql_where=text("seq IS NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    type: Mapped[str] = mapped_column(String(32))
    job_row_id: Mapped[int] = mapped_column(BigId)
    job_id: Mapped[str | None] = mapped_column(String(128))
    media_id: Mapped[str] = mapped_column(String(128))
    previous_state: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    data: Mapped[dict[str, Any]]


class Subscription(Base):
    """Where to push job changes: a URL, the event types it wants, and its signing secrets."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    # None: every event type.
    event_types: Mapped[list[str] | None] = mapped_column(Json)
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    secret: Mapped[str] = mapped_column(String(128))
    # The secret before the last rotation signs beside the new one until it expires.
    old_secret: Mapped[str | None] = mapped_column(String(128))
    old_secret_expires_at: Mapped[datetime | None]
    # `env`: declared by TRACKER_NOTIFY_URL; `api`: created through the API or the CLI.
    source: Mapped[str] = mapped_column(String(16))
    # The last change fanned out to this subscription's deliveries.
    cursor_seq: Mapped[int] = mapped_column(BigInteger)
    first_failure_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Delivery(Base):
    """One change owed to one subscription; claimed with a lease while it is being sent."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "change_seq"),
        Index("ix_deliveries_subscription_id_id", "subscription_id", "id"),
        Index(
            "ix_deliveries_due",
            "subscription_id",
            "next_attempt_at",
            sqlite_where=text(DELIVERY_DUE_SQL),
            postgresql_where=text(DELIVERY_DUE_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    change_seq: Mapped[int] = mapped_column(BigInteger, index=True)
    # pending, sending, succeeded, failed (the dead letter), skipped (subscription disabled)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    claim_id: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    # scheduled; manual (a retry or replay asked for): one attempt, never retried on its own
    trigger: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DeliveryAttempt(Base):
    """One HTTP attempt of a delivery, appended after the call returned."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)
    # scheduled, or manual (a retry or replay asked for through the API or the CLI)
    trigger: Mapped[str] = mapped_column(String(16))


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
