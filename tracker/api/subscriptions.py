"""A subscription and its deliveries as the API and `tracker subscriptions` show them: the shapes
(tracker/api/schemas/) built from rows, and the read that lists a subscription's deliveries.

Statements: take a session, never commit.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.api import schemas
from tracker.clock import iso
from tracker.models import Delivery, DeliveryAttempt, JobChange, Subscription
from tracker.notify.deliveries import webhook_id
from tracker.shapes import CHANGE_TYPES

PAGE = 50
MAX_PAGE = 200


def subscription_json(sub: Subscription, *, with_secret: bool = False) -> schemas.Subscription:
    """Its secret only when asked: on creation and rotation."""
    body: schemas.Subscription = {
        "id": sub.id,
        "url": sub.url,
        "description": sub.description,
        "event_types": list(sub.event_types) if sub.event_types else list(CHANGE_TYPES),
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "source": sub.source,
        "created_at": iso(sub.created_at),
        "last_success_at": iso(sub.last_success_at),
        "failing_since": iso(sub.first_failure_at),
    }
    if with_secret:
        body["secret"] = sub.secret
    return body


def attempt_json(attempt: DeliveryAttempt) -> schemas.Attempt:
    return {
        "attempted_at": iso(attempt.attempted_at),
        "status_code": attempt.status_code,
        "duration_ms": round(attempt.duration_ms, 1),
        "error": attempt.error,
        "response_body": attempt.response_body,
        "trigger": attempt.trigger,
    }


def delivery_json(
    delivery: Delivery, type_: str | None, attempts: list[schemas.Attempt]
) -> schemas.Delivery:
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


async def list_deliveries(
    session: AsyncSession, sub_id: int, *, limit: int = PAGE, before: int | None = None
) -> tuple[list[schemas.Delivery], int | None]:
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
    attempts: dict[int, list[schemas.Attempt]] = {i: [] for i in ids}
    if ids:
        for attempt in await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(ids))
            .order_by(DeliveryAttempt.id)
        ):
            attempts[attempt.delivery_id].append(attempt_json(attempt))
    items = [delivery_json(delivery, type_, attempts[delivery.id]) for delivery, type_ in rows]
    return items, (ids[-1] if more and ids else None)
