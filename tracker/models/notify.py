"""The notification tables (tracker/notify/): the change log, subscriptions, deliveries, their
attempts and test pings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tracker.models.base import Base, BigId, Json

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


# --- test pings of a subscription (tracker/notify/pings.py, migration 0008) ---------------------


class SubscriptionPing(Base):
    """What one test ping (`POST /subscriptions/{id}/test`, or the console's button) came to,
    recorded as a delivery's attempt is; at most PINGS_KEPT per subscription are kept."""

    __tablename__ = "subscription_pings"
    __table_args__ = (Index("ix_subscription_pings_subscription_id_id", "subscription_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(String(64))
    attempted_at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)
