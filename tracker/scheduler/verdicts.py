"""Statements: VOD's word on jobs applied (ListAIJob's statuses, lost jobs, held callbacks settled).

Reconciliation (`reconcile.py`) asks VOD and commits; these functions take its session and never
commit. VOD's answer goes through the same state machine as callbacks, so the outcome is the same
whichever arrives first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.models import CONFIRMED, CONTRADICTED, CallbackEvent, Job, JobState
from tracker.transitions import Applied, Outcome, apply_outcome, transition
from tracker.vod import AIJobStatus, ListResult

FINAL_STATUSES = ("success", "fail")


def status_outcome(status: AIJobStatus) -> Outcome:
    """What ListAIJob says of a job, as the state machine's input."""
    return Outcome(
        job_id=status.job_id,
        type=status.type,
        status=status.status,
        media_id=status.media_id or None,
        code=status.code,
        message=status.message,
        data=status.data,
        event_time=status.complete_time or status.creation_time,
        completed_at=status.complete_time,
        created_at=status.creation_time,
    )


@dataclass
class AnswerCounts:
    """What VOD's answers did to the jobs and callbacks they named, added up over a run."""

    finished: int = 0
    running: int = 0
    unchanged: int = 0
    lost: int = 0
    confirmed: int = 0
    contradicted: int = 0


async def apply_list_result(
    session: AsyncSession,
    result: ListResult,
    now: datetime,
    counts: AnswerCounts,
    *,
    region: str | None = None,
) -> None:
    """Apply one ListAIJob answer: `success`/`fail` through `apply_outcome`, `init`/`processing`
    refresh the job, NonExistAIJobIds become `lost`. Idempotent: applying it twice changes
    nothing more. Callbacks awaiting confirmation are settled by VOD's final word. Jobs of no
    known region that VOD listed take `region`, the region that was asked."""
    verdicts: dict[str, str | None] = {}
    found = [status.job_id for status in result.jobs if status.job_id]
    if region is not None and found:
        await session.execute(
            update(Job)
            .where(Job.job_id.in_(found), Job.region.is_(None))
            .values(region=region)
            .execution_options(synchronize_session=False)
        )
    for status in result.jobs:
        applied = await apply_outcome(session, status_outcome(status), now)
        if status.status in FINAL_STATUSES:
            verdicts[status.job_id] = status.status
            if applied in (Applied.APPLIED, Applied.RESOLVED, Applied.CREATED):
                counts.finished += 1
            else:
                counts.unchanged += 1
        elif applied.changed:
            counts.running += 1
        else:
            counts.unchanged += 1
    for job_id in result.missing:
        # `lost` is not final (a late callback may still tell the truth), but it is no longer
        # unfinished: it leaves the stale set and any pending confirmation is void.
        counts.lost += await transition(
            session,
            Job.job_id == job_id,
            JobState.LOST,
            now,
            stale=False,
            pending_status=None,
            pending_since=None,
        )
        verdicts[job_id] = None
    await settle_pending_events(session, verdicts, now, counts)


async def settle_pending_events(
    session: AsyncSession, verdicts: dict[str, str | None], now: datetime, counts: AnswerCounts
) -> None:
    """Mark callbacks stored as `pending_confirmation` applied when VOD's final status agrees,
    else `contradicted_by_vod`. `verdicts`: JobId -> VOD's final status, None if VOD has no
    such job. Keyed on the JobIds, not on `jobs.pending_status`, so an event marked pending
    while VOD was being asked is still settled."""
    if not verdicts:
        return
    event = CallbackEvent
    rows = (
        await session.execute(
            select(event.id, event.job_id, event.status).where(
                event.job_id.in_(list(verdicts)),
                event.applied.is_(False),
                event.reason == Applied.PENDING.value,
            )
        )
    ).all()
    agree = [r.id for r in rows if (r.status or "").lower() == verdicts[r.job_id]]
    disagree = [r.id for r in rows if (r.status or "").lower() != verdicts[r.job_id]]
    for ids, applied, reason in ((agree, True, CONFIRMED), (disagree, False, CONTRADICTED)):
        if ids:
            await session.execute(
                update(event)
                .where(event.id.in_(ids))
                .values(applied=applied, applied_at=now, reason=reason)
                .execution_options(synchronize_session=False)
            )
    counts.confirmed += len(agree)
    counts.contradicted += len(disagree)
    metrics.CALLBACKS_APPLIED.inc(len(agree))
    if disagree:
        metrics.CALLBACKS_UNAPPLIED.labels(CONTRADICTED).inc(len(disagree))
