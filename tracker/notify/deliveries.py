"""Deliveries: one row per change owed to a subscription, claimed with a lease, attempts appended.

Statements only: each takes a session and never commits; `tracker.notify.relay` owns the
transactions and makes every HTTP call outside them. A delivery is `pending` (waiting for
`next_attempt_at`), `sending` (leased until `lease_until` by `claim_id`; taken again once the
lease expires, so no delivery waits forever for a dead replica), `succeeded`, `failed` (the dead
letter: listed, replayable) or `skipped` (its subscription was disabled).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import insert
from tracker.errors import NotFound
from tracker.models import Delivery, DeliveryAttempt, JobChange, Subscription
from tracker.notify.changes import change_json
from tracker.notify.subscriptions import disable_subscription, signing_secrets
from tracker.shapes import Change

FAN_OUT_BATCH = 1_000  # changes per subscription per fan-out transaction
JITTER = 0.2  # +-20 % on every retry delay (Svix)
MAX_RETRY_AFTER = timedelta(hours=24)
REPLAY_LIMIT = 10_000  # deliveries re-queued by one replay (Svix: 10 000)
BODY_KEPT = 2_048  # characters of a response body stored with its attempt


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"


def _is_due(now: datetime) -> Any:
    return or_(
        and_(Delivery.status == "pending", Delivery.next_attempt_at <= now),
        and_(Delivery.status == "sending", Delivery.lease_until < now),
    )


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


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt came to."""

    status_code: int | None
    duration_ms: float
    error: str | None = None
    body: str | None = None
    retry_after: timedelta | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def retry_delay(
    schedule: Sequence[timedelta],
    attempts: int,
    retry_after: timedelta | None,
    rng: random.Random | None = None,
) -> timedelta | None:
    """The wait before attempt number `attempts + 1`, or None when the schedule is spent.

    `schedule[n]` is the wait before attempt n+1 (the first is usually 0s), with +-20 % jitter;
    a receiver's Retry-After (429, 503) lengthens it, up to a day.
    """
    if attempts >= len(schedule):
        return None
    jitter = 1 + (rng or random).uniform(-JITTER, JITTER)
    delay = schedule[attempts] * jitter
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


async def record_attempts(
    session: AsyncSession,
    finished: Sequence[tuple[Claimed, AttemptResult]],
    now: datetime,
    *,
    schedule: Sequence[timedelta],
    disable_after: timedelta,
) -> list[str]:
    """Append the attempts and settle their deliveries, a few statements for any number;
    return each delivery's new status.

    2xx: `succeeded`, and the subscription is healthy again. 410: `failed`, and the subscription
    is disabled. Otherwise `pending` for the next attempt of the schedule, or `failed` when it is
    spent (a manual attempt is never retried on its own); a subscription failing without a
    success for `disable_after` is disabled. A delivery is changed only while this claim still
    holds it (a lease taken over by another process leaves the result to that process).
    """
    if not finished:
        return []
    await session.execute(
        insert(session, DeliveryAttempt.__table__),
        [
            {
                "delivery_id": claimed.id,
                "attempted_at": now,
                "status_code": result.status_code,
                "duration_ms": result.duration_ms,
                "error": result.error,
                "response_body": (result.body or None) and result.body[:BODY_KEPT],
                "trigger": claimed.trigger,
            }
            for claimed, result in finished
        ],
    )
    statuses: list[str] = []
    settled: list[dict[str, Any]] = []
    for claimed, result in finished:
        delay = None
        if not result.ok and claimed.trigger == "scheduled" and not result.gone:
            delay = retry_delay(schedule, claimed.attempts + 1, result.retry_after)
        status = "succeeded" if result.ok else "failed" if delay is None else "pending"
        statuses.append(status)
        settled.append(
            {
                "b_id": claimed.id,
                "b_claim": claimed.claim_id,
                "b_status": status,
                "b_attempts": claimed.attempts + 1,
                "b_error": result.error or (None if result.ok else f"HTTP {result.status_code}"),
                "b_next": None if delay is None else now + delay,
            }
        )
    table = cast(Table, Delivery.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.claim_id == bindparam("b_claim"))
        .values(
            status=bindparam("b_status"),
            attempts=bindparam("b_attempts"),
            last_error=bindparam("b_error"),
            next_attempt_at=bindparam("b_next", type_=table.c.next_attempt_at.type),
            lease_until=None,
            claim_id=None,
            updated_at=now,
        ),
        settled,
    )
    await _judge_subscriptions(session, finished, now, disable_after)
    return statuses


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


async def _judge_subscriptions(
    session: AsyncSession,
    finished: Sequence[tuple[Claimed, AttemptResult]],
    now: datetime,
    disable_after: timedelta,
) -> None:
    """Health of each subscription after its attempts: a success clears its failing streak, a
    410 or a streak longer than `disable_after` disables it."""
    by_sub: dict[int, list[AttemptResult]] = {}
    for claimed, result in finished:
        by_sub.setdefault(claimed.subscription_id, []).append(result)
    subs = await session.scalars(select(Subscription).where(Subscription.id.in_(list(by_sub))))
    for sub in list(subs):
        results = by_sub[sub.id]
        if any(r.ok for r in results):
            sub.first_failure_at = None
            sub.last_success_at = now
            continue
        if not sub.enabled:
            continue
        if any(r.gone for r in results):
            await disable_subscription(session, sub.id, "the receiver answered 410 Gone", now)
            continue
        first = sub.first_failure_at or now
        sub.first_failure_at = first
        if now - first >= disable_after:
            reason = f"failing without a success since {first.isoformat()}"
            await disable_subscription(session, sub.id, reason, now)
    await session.flush()


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
