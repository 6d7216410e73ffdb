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
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import iso
from tracker.db import insert
from tracker.errors import NotFound
from tracker.models import Delivery, DeliveryAttempt, JobChange, Subscription

FAN_OUT_BATCH = 1_000  # changes per subscription per fan-out transaction
REPLAY_LIMIT = 10_000  # deliveries re-queued by one replay (Svix: 10 000)
PAGE = 50
MAX_PAGE = 200


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


async def list_deliveries(
    session: AsyncSession, sub_id: int, *, limit: int = PAGE, before: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """A subscription's deliveries, newest first, each with its attempts; and the cursor of
    the next page (the last id shown), or None."""
    query = (
        select(Delivery, JobChange.type)
        .join(JobChange, JobChange.seq == Delivery.change_seq, isouter=True)
        .where(Delivery.subscription_id == sub_id)
        .order_by(Delivery.id.desc())
        .limit(min(limit, MAX_PAGE) + 1)
    )
    if before is not None:
        query = query.where(Delivery.id < before)
    rows = (await session.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [delivery.id for delivery, _ in rows]
    attempts: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        for attempt in await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(ids))
            .order_by(DeliveryAttempt.id)
        ):
            attempts[attempt.delivery_id].append(attempt_json(attempt))
    items = [delivery_json(delivery, type_, attempts[delivery.id]) for delivery, type_ in rows]
    return items, (ids[-1] if more and ids else None)


def attempt_json(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "attempted_at": iso(attempt.attempted_at),
        "status_code": attempt.status_code,
        "duration_ms": round(attempt.duration_ms, 1),
        "error": attempt.error,
        "response_body": attempt.response_body,
        "trigger": attempt.trigger,
    }


def delivery_json(
    delivery: Delivery, type_: str | None, attempts: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "seq": delivery.change_seq,
        "webhook_id": webhook_id(delivery.change_seq),
        "type": type_,
        "status": delivery.status,
        "attempts": attempts,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "last_error": delivery.last_error,
        "created_at": iso(delivery.created_at),
    }


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
