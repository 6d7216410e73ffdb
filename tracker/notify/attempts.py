"""Statements: what each attempt to send a delivery came to, recorded, and its retry scheduled.

Each takes a session and never commits; the recorder (`recorder.py`) owns the transactions, and
the relay's sending half (`send.py`) makes the HTTP calls outside them. Recording settles the
delivery (succeeded, pending for its next attempt, or failed: the dead letter) and judges its
subscription's health.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Insert, Table, Update, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import db_time, insert, json_rows, rows_json
from tracker.models import Delivery, DeliveryAttempt, Subscription
from tracker.notify.claims import Claimed
from tracker.notify.post import MAX_RETRY_AFTER, AttemptResult
from tracker.notify.subscriptions import disable_subscription

JITTER = 0.2  # +-20 % on every retry delay (Svix)
BODY_KEPT = 2_048  # characters of a response body stored with its attempt

ATTEMPTS = cast(Table, DeliveryAttempt.__table__)
DELIVERIES = cast(Table, Delivery.__table__)
# What `record_attempts` sends per result, typed as the tables type them.
RESULT_COLUMNS: dict[str, Any] = {
    "delivery_id": DELIVERIES.c.id.type,
    "claim_id": DELIVERIES.c.claim_id.type,
    "status_code": ATTEMPTS.c.status_code.type,
    "duration_ms": ATTEMPTS.c.duration_ms.type,
    "error": ATTEMPTS.c.error.type,
    "response_body": ATTEMPTS.c.response_body.type,
    "trigger": ATTEMPTS.c.trigger.type,
    "status": DELIVERIES.c.status.type,
    "attempts": DELIVERIES.c.attempts.type,
    "last_error": DELIVERIES.c.last_error.type,
    "next_attempt_at": DELIVERIES.c.next_attempt_at.type,
}
# Built once per dialect (building a statement costs more than running it); the recording time
# travels as this parameter.
NOW = bindparam("now", type_=ATTEMPTS.c.attempted_at.type)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a batch came to: each delivery's new status, the subscriptions disabled."""

    statuses: list[str]
    disabled: list[int]


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
) -> Recorded:
    """Append the attempts and settle their deliveries, two statements for any number (across
    subscriptions, the results sent as one JSON parameter: `json_rows`), then judge each
    subscription's health.

    2xx: `succeeded`, and the subscription is healthy again. 410: `failed`, and the subscription
    is disabled. Otherwise `pending` for the next attempt of the schedule, or `failed` when it is
    spent (a manual attempt is never retried on its own); a subscription failing without a
    success for `disable_after` is disabled. A delivery is changed only while this claim still
    holds it (a lease taken over by another process leaves the result to that process).
    """
    if not finished:
        return Recorded([], [])
    dialect = session.get_bind().dialect.name
    statuses: list[str] = []
    rows: list[dict[str, Any]] = []
    for claimed, result in finished:
        delay = None
        if not result.ok and claimed.trigger == "scheduled" and not result.gone:
            delay = retry_delay(schedule, claimed.attempts + 1, result.retry_after)
        status = "succeeded" if result.ok else "failed" if delay is None else "pending"
        statuses.append(status)
        rows.append(
            {
                "delivery_id": claimed.id,
                "claim_id": claimed.claim_id,
                "status_code": result.status_code,
                "duration_ms": result.duration_ms,
                "error": result.error,
                "response_body": (result.body or None) and result.body[:BODY_KEPT],
                "trigger": claimed.trigger,
                "status": status,
                "attempts": claimed.attempts + 1,
                "last_error": result.error or (None if result.ok else f"HTTP {result.status_code}"),
                "next_attempt_at": None if delay is None else db_time(now + delay, dialect),
            }
        )
    batch = {"results": rows_json(rows), "now": now}
    await session.execute(append_attempts(dialect), batch)
    await session.execute(settle_deliveries(dialect), batch)
    disabled = await judge_subscriptions(session, finished, now, disable_after)
    return Recorded(statuses, disabled)


@functools.cache
def append_attempts(dialect: str) -> Insert:
    """INSERT an attempt for each of the `results` rows."""
    batch = json_rows("results", RESULT_COLUMNS, dialect)
    columns = ["delivery_id", "status_code", "duration_ms", "error", "response_body", "trigger"]
    statement: Insert = insert(dialect, ATTEMPTS).from_select(
        [*columns, "attempted_at"], select(*(batch.c[name] for name in columns), NOW)
    )
    return statement


@functools.cache
def settle_deliveries(dialect: str) -> Update:
    """Settle the delivery of each of the `results` rows that its claim still holds."""
    batch = json_rows("results", RESULT_COLUMNS, dialect)
    return (
        update(DELIVERIES)
        .where(
            DELIVERIES.c.id == batch.c.delivery_id,
            DELIVERIES.c.claim_id == batch.c.claim_id,
        )
        .values(
            status=batch.c.status,
            attempts=batch.c.attempts,
            last_error=batch.c.last_error,
            next_attempt_at=batch.c.next_attempt_at,
            lease_until=None,
            claim_id=None,
            updated_at=NOW,
        )
    )


async def judge_subscriptions(
    session: AsyncSession,
    finished: Sequence[tuple[Claimed, AttemptResult]],
    now: datetime,
    disable_after: timedelta,
) -> list[int]:
    """Health of each subscription after its attempts: a success clears its failing streak, a
    410 or a streak longer than `disable_after` disables it; return the ones disabled. A few
    statements for any number of subscriptions (no ORM object)."""
    healthy: set[int] = set()
    gone: set[int] = set()
    failing: set[int] = set()
    for claimed, result in finished:
        sub = claimed.subscription_id
        if result.ok:
            healthy.add(sub)
        elif result.gone:
            gone.add(sub)
        else:
            failing.add(sub)
    if healthy:
        await session.execute(
            update(Subscription)
            .where(Subscription.id.in_(sorted(healthy)))
            .values(first_failure_at=None, last_success_at=now)
            .execution_options(synchronize_session=False)
        )
    gone -= healthy
    failing -= healthy | gone
    disabled: list[int] = []
    for sub in sorted(gone):
        if await disable_subscription(session, sub, "the receiver answered 410 Gone", now):
            disabled.append(sub)
    if not failing:
        return disabled
    enabled = Subscription.id.in_(sorted(failing)) & Subscription.enabled.is_(True)
    await session.execute(
        update(Subscription)
        .where(enabled, Subscription.first_failure_at.is_(None))
        .values(first_failure_at=now)
        .execution_options(synchronize_session=False)
    )
    expired = select(Subscription.id, Subscription.first_failure_at).where(
        enabled, Subscription.first_failure_at <= now - disable_after
    )
    for sub, first in (await session.execute(expired)).all():
        reason = f"failing without a success since {(first or now).isoformat()}"
        if await disable_subscription(session, sub, reason, now):
            disabled.append(sub)
    return disabled
