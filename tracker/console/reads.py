"""The console's own reads, where the JSON API has none: a job's deliveries, refused and
unapplied callbacks, scheduler runs, a subscription's health. Each is bounded and indexed.

Statements: take a session, never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.console.timeline import DeliveryRow
from tracker.models import (
    NOT_APPLIED_SQL,
    CallbackEvent,
    CallbackRefusal,
    Delivery,
    DeliveryAttempt,
    JobChange,
    SchedulerRun,
    Subscription,
)

COUNT_CAP = 10_000  # a backlog is counted up to this, then shown as "10,000+"
HEALTH_WINDOW = 100  # a subscription's success rate: over its last this many deliveries


async def job_deliveries(session: AsyncSession, seqs: Sequence[int]) -> list[DeliveryRow]:
    """The deliveries of these changes (one job's), each with its last attempt."""
    if not seqs:
        return []
    rows = (
        await session.execute(
            select(Delivery, JobChange.type)
            .join(JobChange, JobChange.seq == Delivery.change_seq)
            .where(Delivery.change_seq.in_(list(seqs)))
            .order_by(Delivery.id)
            .limit(500)
        )
    ).all()
    last: dict[int, DeliveryAttempt] = {}
    ids = [delivery.id for delivery, _ in rows]
    if ids:
        for attempt in await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(ids))
            .order_by(DeliveryAttempt.id)
        ):
            last[attempt.delivery_id] = attempt
    found: list[DeliveryRow] = []
    for delivery, change_type in rows:
        final = last.get(delivery.id)
        found.append(
            DeliveryRow(
                subscription_id=delivery.subscription_id,
                change_type=change_type,
                status=delivery.status,
                attempts=delivery.attempts,
                last_at=final.attempted_at if final else None,
                last_code=final.status_code if final else None,
                last_error=final.error if final else None,
            )
        )
    return found


async def job_delivery_details(
    session: AsyncSession, seqs: Sequence[int]
) -> list[tuple[Delivery, str | None, list[DeliveryAttempt]]]:
    """The same deliveries with every attempt, for the job page's deliveries section."""
    if not seqs:
        return []
    rows = (
        await session.execute(
            select(Delivery, JobChange.type)
            .join(JobChange, JobChange.seq == Delivery.change_seq)
            .where(Delivery.change_seq.in_(list(seqs)))
            .order_by(Delivery.subscription_id, Delivery.id)
            .limit(500)
        )
    ).all()
    attempts: dict[int, list[DeliveryAttempt]] = {delivery.id: [] for delivery, _ in rows}
    if attempts:
        for attempt in await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(list(attempts)))
            .order_by(DeliveryAttempt.id)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [(delivery, kind, attempts[delivery.id]) for delivery, kind in rows]


async def recent_refusals(session: AsyncSession, limit: int = 100) -> list[CallbackRefusal]:
    query = select(CallbackRefusal).order_by(CallbackRefusal.id.desc()).limit(limit)
    return list(await session.scalars(query))


async def recent_not_applied(
    session: AsyncSession, since: datetime, limit: int = 100
) -> list[CallbackEvent]:
    """Stored callbacks that were not applied (malformed, untracked types, contradicted...),
    newest first: a partial index holds only them."""
    query = (
        select(CallbackEvent)
        .where(text(NOT_APPLIED_SQL), CallbackEvent.received_at >= since)
        .order_by(CallbackEvent.received_at.desc())
        .limit(limit)
    )
    return list(await session.scalars(query))


async def scheduler_runs(session: AsyncSession, per_job: int = 20) -> dict[str, list[SchedulerRun]]:
    """The latest runs of each scheduled job, newest first."""
    names = list(await session.scalars(select(SchedulerRun.name).distinct()))
    runs: dict[str, list[SchedulerRun]] = {}
    for name in sorted(names):
        runs[name] = list(
            await session.scalars(
                select(SchedulerRun)
                .where(SchedulerRun.name == name)
                .order_by(SchedulerRun.id.desc())
                .limit(per_job)
            )
        )
    return runs


@dataclass(frozen=True)
class Health:
    sent: int  # attempts answered 2xx, over the last HEALTH_WINDOW deliveries
    attempts: int
    backlog: int  # pending or being sent, counted up to COUNT_CAP
    failed: int  # dead letters, counted up to COUNT_CAP

    @property
    def success_rate(self) -> float | None:
        return None if self.attempts == 0 else self.sent / self.attempts


async def _capped_count(session: AsyncSession, sub_id: int, statuses: tuple[str, ...]) -> int:
    inner = (
        select(Delivery.id)
        .where(Delivery.subscription_id == sub_id, Delivery.status.in_(statuses))
        .limit(COUNT_CAP + 1)
        .subquery()
    )
    return int(await session.scalar(select(func.count()).select_from(inner)) or 0)


async def subscription_health(session: AsyncSession, sub: Subscription) -> Health:
    recent = (
        select(Delivery.id)
        .where(Delivery.subscription_id == sub.id)
        .order_by(Delivery.id.desc())
        .limit(HEALTH_WINDOW)
        .subquery()
    )
    ok = DeliveryAttempt.status_code.between(200, 299)
    attempts, sent = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(case((ok, 1), else_=0)), 0))
            .select_from(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(select(recent.c.id)))
        )
    ).one()
    return Health(
        sent=int(sent),
        attempts=int(attempts),
        backlog=await _capped_count(session, sub.id, ("pending", "sending")),
        failed=await _capped_count(session, sub.id, ("failed",)),
    )
