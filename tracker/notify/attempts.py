"""Statements: what each attempt to send a delivery came to, recorded, and its retry scheduled.

Each takes a session and never commits; the recorder (`recorder.py`) owns the transactions, and
the relay's sending half (`send.py`) makes the HTTP calls outside them. Recording settles the
delivery (succeeded, pending for its next attempt, or failed: the dead letter) and judges its
subscription's health.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import insert
from tracker.models import Delivery, DeliveryAttempt, Subscription
from tracker.notify.claims import Claimed
from tracker.notify.subscriptions import disable_subscription

JITTER = 0.2  # +-20 % on every retry delay (Svix)
MAX_RETRY_AFTER = timedelta(hours=24)
BODY_KEPT = 2_048  # characters of a response body stored with its attempt


@dataclass(frozen=True, slots=True)
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
    subscriptions), then judge each subscription's health.

    2xx: `succeeded`, and the subscription is healthy again. 410: `failed`, and the subscription
    is disabled. Otherwise `pending` for the next attempt of the schedule, or `failed` when it is
    spent (a manual attempt is never retried on its own); a subscription failing without a
    success for `disable_after` is disabled. A delivery is changed only while this claim still
    holds it (a lease taken over by another process leaves the result to that process).
    """
    if not finished:
        return Recorded([], [])
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
    disabled = await judge_subscriptions(session, finished, now, disable_after)
    return Recorded(statuses, disabled)


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
