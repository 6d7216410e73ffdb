"""Statements: deliveries, one row per change owed to a subscription; fanned out, listed, replayed.

Each takes a session and never commits; `tracker.notify.relay` owns the transactions and makes
every HTTP call outside them. Leasing deliveries is in `claims.py`, recording their attempts in
`attempts.py`. A delivery is `pending` (waiting for `next_attempt_at`), `sending` (leased by
`claim_id` until `lease_until`, which `next_attempt_at` equals meanwhile: taken again once the
lease expires, so no delivery waits forever for a dead replica), `succeeded`, `failed` (the dead
letter: listed, replayable) or `skipped` (its subscription was disabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, literal, or_, select, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import insert
from tracker.errors import NotFound, TrackerError
from tracker.models import Delivery, JobChange, Subscription

# Deliveries created by one fan-out statement at most (subscriptions x changes): the transaction
# holding SQLite's one writer stays a few milliseconds long whatever the backlog.
FAN_OUT_ROWS = 2_000
REPLAY_LIMIT = 10_000  # deliveries re-queued by one replay (Svix: 10 000)
FAN_OUT_LOCK = 0x7472_6B66_616E  # "trkfan": one replica fans out at a time (PostgreSQL)


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"


class SubscriptionDisabled(TrackerError):
    """A retry or replay asked of a disabled subscription: nothing would ever send it."""

    status_code = 409
    code = "subscription_disabled"


async def _require_enabled(session: AsyncSession, sub_id: int, what: str) -> None:
    found = (
        await session.execute(
            select(Subscription.enabled, Subscription.disabled_reason).where(
                Subscription.id == sub_id
            )
        )
    ).first()
    if found is not None and not found.enabled:
        raise SubscriptionDisabled(
            f"subscription {sub_id} is disabled ({found.disabled_reason or 'no reason given'}), "
            f"so {what} would never be sent; enable it first "
            f'(PATCH /subscriptions/{sub_id} {{"enabled": true}}), then ask again',
            subscription_id=sub_id,
        )


def _wants(dialect: str) -> Any:
    """The subscription wants the change's type: all types (NULL, or JSON null), or listed."""
    types = Subscription.event_types
    if dialect == "postgresql":
        listed = type_coerce(types, JSONB).has_key(JobChange.type)
        every = func.jsonb_typeof(type_coerce(types, JSONB)) == "null"
    else:
        each = func.json_each(types).table_valued("value")
        listed = exists(select(literal(1)).select_from(each).where(each.c.value == JobChange.type))
        every = func.json_type(types) == "null"
    return or_(types.is_(None), every, listed)


@dataclass(frozen=True, slots=True)
class FannedOut:
    created: int  # deliveries
    more: bool  # changes past some cursor remain (FAN_OUT_ROWS was reached)


async def fan_out(session: AsyncSession, now: datetime) -> FannedOut | None:
    """Create the deliveries the enabled subscriptions are owed for changes past their cursors
    (at most FAN_OUT_ROWS), and move the cursors; None when another replica holds the
    fan-out. Set-based: one
    INSERT ... SELECT for every subscription at once, one UPDATE of the cursors. Idempotent:
    (subscription, change) is unique.

    On PostgreSQL one replica fans out at a time (a transaction lock; the others skip it), and a
    subscription created meanwhile is left to the next turn: only the subscriptions read here
    have their cursors moved.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        locked = await session.scalar(select(func.pg_try_advisory_xact_lock(FAN_OUT_LOCK)))
        if not locked:
            return None
    newest = select(func.max(JobChange.seq)).scalar_subquery()
    behind = (
        await session.execute(
            select(Subscription.id, Subscription.cursor_seq, newest).where(
                Subscription.enabled.is_(True), Subscription.cursor_seq < newest
            )
        )
    ).all()
    if not behind:
        return FannedOut(0, more=False)
    ids = [row[0] for row in behind]
    lowest = min(int(row[1]) for row in behind)
    newest_seq = int(behind[0][2])
    upto = min(newest_seq, lowest + max(1, FAN_OUT_ROWS // len(behind)))
    table = Delivery.__table__
    rows = (
        select(
            Subscription.id,
            JobChange.seq,
            literal("pending"),
            literal(0),
            literal(now, table.c.next_attempt_at.type),
            literal("scheduled"),
            literal(now, table.c.created_at.type),
            literal(now, table.c.updated_at.type),
        )
        .select_from(Subscription)
        .join(JobChange, and_(JobChange.seq > Subscription.cursor_seq, JobChange.seq <= upto))
        .where(Subscription.id.in_(ids), _wants(dialect))
        .order_by(JobChange.seq, Subscription.id)  # ids follow each subscription's seq order
    )
    columns = ["subscription_id", "change_seq", "status", "attempts", "next_attempt_at"]
    columns += ["trigger", "created_at", "updated_at"]
    statement = insert(session, table).from_select(columns, rows).on_conflict_do_nothing()
    result = await session.execute(statement)
    await session.execute(
        update(Subscription)
        .where(Subscription.id.in_(ids), Subscription.cursor_seq < upto)
        .values(cursor_seq=upto)
        .execution_options(synchronize_session=False)
    )
    created = max(int(result.rowcount), 0)  # type: ignore[attr-defined]
    return FannedOut(created, more=upto < newest_seq)


async def fan_out_pending(session: AsyncSession) -> bool:
    """True when some enabled subscription has changes it has not fanned out yet (a read)."""
    newest = select(func.max(JobChange.seq)).scalar_subquery()
    query = select(exists().where(Subscription.enabled.is_(True), Subscription.cursor_seq < newest))
    return bool(await session.scalar(query))


async def any_enabled(session: AsyncSession) -> bool:
    """Whether some subscription is enabled (a read)."""
    return bool(await session.scalar(select(exists().where(Subscription.enabled.is_(True)))))


async def count_disabled(session: AsyncSession) -> int:
    query = select(func.count()).where(Subscription.enabled.is_(False))
    return int(await session.scalar(query) or 0)


# --- listing, retry and replay ------------------------------------------------------------------


def webhook_id(seq: int) -> str:
    """The `webhook-id` of a change: the same on every attempt and for every subscription."""
    return f"chg_{seq}"


async def retry_delivery(session: AsyncSession, delivery_id: int, now: datetime) -> Delivery:
    """Queue one more (manual) attempt of a delivery that is not being sent; idempotent. A
    disabled subscription's delivery is refused (409): it would stay pending, never sent."""
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise DeliveryNotFound(f"no delivery with id {delivery_id}", delivery_id=delivery_id)
    await _require_enabled(session, delivery.subscription_id, f"delivery {delivery_id}")
    if delivery.status in ("succeeded", "failed", "skipped"):
        delivery.status = "pending"
        delivery.trigger = "manual"
        delivery.next_attempt_at = now
        delivery.updated_at = now
    await session.flush()
    return delivery


async def replay_failed(session: AsyncSession, sub_id: int, since: datetime, now: datetime) -> int:
    """Re-queue the subscription's failed deliveries created since `since` (at most
    REPLAY_LIMIT), each for one manual attempt; return how many. Refused (409) while the
    subscription is disabled."""
    await _require_enabled(session, sub_id, "its failed deliveries")
    ids = (
        select(Delivery.id)
        .where(
            Delivery.subscription_id == sub_id,
            Delivery.status == "failed",
            Delivery.created_at >= since,
        )
        .order_by(Delivery.id)
        .limit(REPLAY_LIMIT)
        .scalar_subquery()
    )
    result = await session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids))
        .values(status="pending", trigger="manual", next_attempt_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
