"""Statements: deliveries, one row per change owed to a subscription; fanned out, listed, replayed.

Each takes a session and never commits; `tracker.notify.relay` owns the transactions and makes
every HTTP call outside them. Leasing deliveries is in `claims.py`, recording their attempts in
`attempts.py`. A delivery is `pending` (waiting for `next_attempt_at`), `sending` (leased until
`lease_until` by `claim_id`; taken again once the lease expires, so no delivery waits forever for
a dead replica), `succeeded`, `failed` (the dead letter: listed, replayable) or `skipped` (its
subscription was disabled).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import insert
from tracker.errors import NotFound
from tracker.models import Delivery, JobChange, Subscription

FAN_OUT_BATCH = 1_000  # changes per subscription per fan-out transaction
REPLAY_LIMIT = 10_000  # deliveries re-queued by one replay (Svix: 10 000)


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"


async def fan_out(session: AsyncSession, now: datetime) -> int:
    """Create the deliveries each enabled subscription is owed for changes past its cursor, and
    move the cursor; return how many were created. Idempotent: (subscription, change) is unique.

    On PostgreSQL each subscription's row is locked (SKIP LOCKED), so replicas fan out different
    subscriptions at once and never the same one twice.
    """
    subs = select(Subscription).where(Subscription.enabled.is_(True)).order_by(Subscription.id)
    if session.get_bind().dialect.name == "postgresql":
        subs = subs.with_for_update(skip_locked=True)
    created = 0
    for sub in list(await session.scalars(subs)):
        found = (
            await session.execute(
                select(JobChange.seq, JobChange.type)
                .where(JobChange.seq > sub.cursor_seq)
                .order_by(JobChange.seq)
                .limit(FAN_OUT_BATCH)
            )
        ).all()
        if not found:
            continue
        wanted = set(sub.event_types or ())
        rows = [
            {
                "subscription_id": sub.id,
                "change_seq": seq,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "trigger": "scheduled",
                "created_at": now,
                "updated_at": now,
            }
            for seq, type_ in found
            if not wanted or type_ in wanted
        ]
        if rows:
            table = Delivery.__table__
            result = await session.execute(insert(session, table).on_conflict_do_nothing(), rows)
            created += max(int(result.rowcount), 0)  # type: ignore[attr-defined]
        sub.cursor_seq = int(found[-1][0] or 0)
    await session.flush()
    return created


async def fan_out_pending(session: AsyncSession) -> bool:
    """True when some enabled subscription has changes it has not fanned out yet (a read)."""
    newest = select(func.max(JobChange.seq)).scalar_subquery()
    query = select(exists().where(Subscription.enabled.is_(True), Subscription.cursor_seq < newest))
    return bool(await session.scalar(query))


async def count_disabled(session: AsyncSession) -> int:
    query = select(func.count()).where(Subscription.enabled.is_(False))
    return int(await session.scalar(query) or 0)


# --- listing, retry and replay ------------------------------------------------------------------


def webhook_id(seq: int) -> str:
    """The `webhook-id` of a change: the same on every attempt and for every subscription."""
    return f"chg_{seq}"


async def retry_delivery(session: AsyncSession, delivery_id: int, now: datetime) -> Delivery:
    """Queue one more (manual) attempt of a delivery that is not being sent; idempotent."""
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise DeliveryNotFound(f"no delivery with id {delivery_id}", delivery_id=delivery_id)
    if delivery.status in ("succeeded", "failed", "skipped"):
        delivery.status = "pending"
        delivery.trigger = "manual"
        delivery.next_attempt_at = now
        delivery.updated_at = now
    await session.flush()
    return delivery


async def replay_failed(session: AsyncSession, sub_id: int, since: datetime, now: datetime) -> int:
    """Re-queue the subscription's failed deliveries created since `since` (at most
    REPLAY_LIMIT), each for one manual attempt; return how many."""
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
