"""Statements: stored callbacks waiting to be applied, taken in arrival order and applied to jobs.

Each function takes a session and never commits; the applier (`applier.py`) owns the
transactions. An event is waiting while its row has `applied IS NULL`; applying it changes the
job through `tracker.transitions` and records what happened on the row, in the caller's one
transaction.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.ingest.events import not_to_apply, outcome_of
from tracker.models import FINAL, CallbackEvent, Job
from tracker.transitions import Applied, apply_outcomes, mark_pending_many

EVENTS = cast(Table, CallbackEvent.__table__)


async def apply_events(
    session: AsyncSession, now: datetime, confirm: bool, limit: int, only: int | None = None
) -> int:
    """Apply up to `limit` waiting events (just event `only`, if given) in arrival order and
    record on each row what became of it; return how many were looked at.

    On PostgreSQL the rows are claimed with FOR UPDATE SKIP LOCKED, so replicas share the work.
    With `confirm`, an outcome is only marked as awaiting VOD's word (`mark_pending_many`).
    """
    query = (
        select(
            EVENTS.c.id,
            EVENTS.c.event_type,
            EVENTS.c.job_id,
            EVENTS.c.media_id,
            EVENTS.c.status,
            EVENTS.c.event_time,
            EVENTS.c.body,
        )
        .where(EVENTS.c.applied.is_(None))
        .order_by(EVENTS.c.id)
        .limit(limit)
    )
    if only is not None:
        query = query.where(EVENTS.c.id == only)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    done: dict[tuple[bool, str], list[int]] = {}  # (applied, reason) -> event ids
    # Every event of the turn is applied, those of one job in arrival order: a round takes the
    # next event of each job, set-based, and events that can no longer change their job are
    # settled together (`_skip_moot`). Taking only the first event per job let one job's
    # backlog (thousands of forged EventTimes) hold up every callback stored after it.
    queues: dict[str, deque[Any]] = {}
    for row in rows:
        if (reason := not_to_apply(row)) is not None:
            done.setdefault((False, reason), []).append(row.id)
        else:
            queues.setdefault(row.job_id, deque()).append(row)
    earlier: dict[str, list[int]] = {}
    if confirm:
        # A mark records the status awaiting VOD's word (the last one wins) and never makes a
        # job final, so a job's last event of the turn decides and the earlier share its result.
        for job_id, queue in queues.items():
            earlier[job_id] = [row.id for row in list(queue)[:-1]]
            queues[job_id] = deque([queue[-1]])
    rounds = 0
    while queues:
        crowded = [job_id for job_id, queue in queues.items() if rounds or len(queue) > 1]
        if crowded:
            await _skip_moot(session, queues, crowded, done, older=not confirm)
        if not queues:
            break
        rounds += 1
        heads = [queue.popleft() for queue in queues.values()]
        outcomes = [outcome_of(row) for row in heads]
        if confirm:
            results = await mark_pending_many(session, outcomes, now)
        else:
            results = await apply_outcomes(session, outcomes, now)
        for row, result in zip(heads, results, strict=True):
            done.setdefault((result.changed, result.value), []).append(row.id)
            done[result.changed, result.value].extend(earlier.get(row.job_id, ()))
        queues = {job_id: queue for job_id, queue in queues.items() if queue}
    for (changed, reason), ids in done.items():  # one statement per distinct result, usually one
        await session.execute(
            update(EVENTS)
            .where(EVENTS.c.id.in_(ids))
            .values(applied=changed, applied_at=now, reason=reason)
        )
        if changed:
            metrics.CALLBACKS_APPLIED.inc(len(ids))
        else:  # the label is the reason's kind: a bounded set whatever the bodies say
            metrics.CALLBACKS_UNAPPLIED.labels(reason.split(":", 1)[0]).inc(len(ids))
    return len(rows)


async def _skip_moot(
    session: AsyncSession,
    queues: dict[str, deque[Any]],
    job_ids: list[str],
    done: dict[tuple[bool, str], list[int]],
    *,
    older: bool,
) -> None:
    """Settle without a round the queued events of `job_ids` that cannot change their job: all
    of a final job's, and (`older`) those older than the job's last outcome, as the state
    machine's guards would. So a job's backlog costs a statement or two, not one per event; the
    guards still decide for the events left at the head of each queue."""
    found = await session.execute(
        select(Job.job_id, Job.state, Job.event_time).where(Job.job_id.in_(job_ids))
    )
    for job_id, state, event_time in found:
        queue = queues.get(job_id or "")
        if queue is None:
            continue
        if state in FINAL:
            reason = Applied.ALREADY_FINAL.value
            done.setdefault((False, reason), []).extend(row.id for row in queue)
            queue.clear()
        elif older and event_time is not None:
            while queue and queue[0].event_time is not None and queue[0].event_time < event_time:
                done.setdefault((False, Applied.OLDER.value), []).append(queue.popleft().id)
        if not queue:
            del queues[job_id or ""]


async def waiting_ids(session: AsyncSession, limit: int) -> list[int]:
    """The ids of the first `limit` waiting events, in arrival order (a read)."""
    return list(
        await session.scalars(
            select(EVENTS.c.id).where(EVENTS.c.applied.is_(None)).order_by(EVENTS.c.id).limit(limit)
        )
    )


async def set_aside(session: AsyncSession, event_id: int, now: datetime, reason: str) -> None:
    """Store a waiting event as not applied, with `reason`, so it cannot block the others."""
    await session.execute(
        update(EVENTS)
        .where(EVENTS.c.id == event_id, EVENTS.c.applied.is_(None))
        .values(applied=False, applied_at=now, reason=reason)
    )
