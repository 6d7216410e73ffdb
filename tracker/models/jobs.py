"""The job tables: submissions, jobs, the callback inbox, leases and heartbeats, and the states and
predicates that their indexes and statements share."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tracker.models.base import Base, BigId, Json


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
    # Seconds of video, as VOD's GetVideoInfo(s) said before the submission (migration 0007);
    # None for jobs VOD told us of by callback, jobs submitted before it, or a media VOD had
    # not analysed yet.
    duration_s: Mapped[float | None] = mapped_column(Float)


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
