"""Statements: deliveries leased to a relay (claimed), and given back unsent (released).

Each takes a session and never commits; the relay (`relay.py`) owns the transactions. A claim
leases due deliveries to one process until `lease_until`: a lease that expires (its process died)
makes the delivery due again, so no delivery waits forever for a dead replica.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import Delivery, JobChange, Subscription
from tracker.notify.changes import change_json
from tracker.notify.subscriptions import signing_secrets
from tracker.shapes import Change


def _is_due(now: datetime) -> Any:
    return or_(
        and_(Delivery.status == "pending", Delivery.next_attempt_at <= now),
        and_(Delivery.status == "sending", Delivery.lease_until < now),
    )


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to this process, with everything needed to send it."""

    id: int
    subscription_id: int
    claim_id: str
    attempts: int
    trigger: str
    url: str
    secrets: tuple[str, ...]
    seq: int
    body: bytes
    lease_until: datetime


async def due_subscriptions(session: AsyncSession, now: datetime) -> list[int]:
    """Subscriptions with a delivery due now (a read, on the partial index)."""
    query = select(Delivery.subscription_id).where(_is_due(now)).distinct()
    return list(await session.scalars(query))


async def next_due(session: AsyncSession) -> datetime | None:
    """When the earliest pending delivery falls due."""
    query = select(func.min(Delivery.next_attempt_at)).where(Delivery.status == "pending")
    return await session.scalar(query)


async def claim_due(
    session: AsyncSession,
    sub_id: int,
    limit: int,
    now: datetime,
    lease: timedelta,
    claim_id: str,
) -> list[Claimed]:
    """Lease up to `limit` due deliveries of one enabled subscription to `claim_id`.

    One UPDATE ... RETURNING over a subquery that, on PostgreSQL, locks with FOR UPDATE SKIP
    LOCKED: replicas claiming at once take different rows. On SQLite the single writer makes
    the statement atomic. Leases that expired are taken again here.
    """
    # populate_existing: a disable earlier in this transaction (a Core UPDATE) must be seen.
    sub = await session.get(Subscription, sub_id, populate_existing=True)
    if sub is None or not sub.enabled or limit <= 0:
        return []
    due = (
        select(Delivery.id)
        .where(Delivery.subscription_id == sub_id, _is_due(now))
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = (
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_(due.scalar_subquery()))
            .values(status="sending", lease_until=now + lease, claim_id=claim_id, updated_at=now)
            .returning(
                Delivery.id,
                Delivery.change_seq,
                Delivery.attempts,
                Delivery.trigger,
            )
            .execution_options(synchronize_session=False)
        )
    ).all()
    if not rows:
        return []
    changes = {
        change.seq: change
        for change in await session.scalars(
            select(JobChange).where(JobChange.seq.in_([row.change_seq for row in rows]))
        )
    }
    secrets_ = tuple(signing_secrets(sub, now))
    claimed = []
    for row in rows:
        change = changes.get(row.change_seq)
        if change is None:  # pruned meanwhile: nothing left to send
            await _settle(session, row.id, claim_id, "failed", now, error="change pruned")
            continue
        claimed.append(
            Claimed(
                id=row.id,
                subscription_id=sub_id,
                claim_id=claim_id,
                attempts=row.attempts,
                trigger=row.trigger,
                url=sub.url,
                secrets=secrets_,
                seq=row.change_seq,
                body=webhook_body(change_json(change)),
                lease_until=now + lease,
            )
        )
    return claimed


def webhook_body(change: Change) -> bytes:
    """The Standard Webhooks payload `{type, timestamp, data}`, as compact JSON bytes."""
    payload = {"type": change["type"], "timestamp": change["timestamp"], "data": change["data"]}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


async def release(session: AsyncSession, unsent: Sequence[Claimed], now: datetime) -> None:
    """Give back claimed deliveries that were never sent (their lease ran short before a slot
    of their subscription freed): pending again at once, no attempt counted."""
    if not unsent:
        return
    table = cast(Table, Delivery.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.claim_id == bindparam("b_claim"))
        .values(
            status="pending", lease_until=None, claim_id=None, next_attempt_at=now, updated_at=now
        ),
        [{"b_id": item.id, "b_claim": item.claim_id} for item in unsent],
    )


async def _settle(
    session: AsyncSession,
    delivery_id: int,
    claim_id: str,
    status: str,
    now: datetime,
    *,
    attempts: int | None = None,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": status,
        "lease_until": None,
        "claim_id": None,
        "last_error": error,
        "next_attempt_at": next_attempt_at,
        "updated_at": now,
    }
    if attempts is not None:
        values["attempts"] = attempts
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.claim_id == claim_id)
        .values(values)
        .execution_options(synchronize_session=False)
    )
