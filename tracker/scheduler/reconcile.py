"""Reconciliation: ask VOD (ListAIJob) about jobs that did not hear back, and apply its answer.

HTTP callbacks can be lost for good (three tries, then VOD drops them: vod-reference.md 6.5), so
jobs that stay unfinished are looked up by JobId. VOD's answer goes through the same state machine
as callbacks, so the outcome is the same whichever arrives first.

Flows: `reconcile_open_jobs` takes the database and the VOD client and commits per batch,
never holding a write transaction across a VOD call.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, null, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.clock import Clock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import (
    CONFIRMED,
    CONTRADICTED,
    PENDING_SQL,
    UNCONFIRMED_SQL,
    UNFINISHED,
    UNFLAGGED_SQL,
    CallbackEvent,
    Job,
    JobState,
)
from tracker.transitions import Applied, Outcome, apply_outcome, transition
from tracker.vod import (
    LIST_LIMIT,
    AIJobStatus,
    ListResult,
    VodClient,
    VodClients,
    VodError,
    VodOutcomeUnknown,
    VodThrottled,
    VodUnreachable,
    is_job_id,
)

log = logging.getLogger(__name__)


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
    )


# Bound on one run: 1,000 ListAIJob calls, about 35 s at VOD's 30 calls/s. The rest waits for the
# next run; stale jobs are taken least recently checked first, so every one gets its turn.
MAX_PER_RUN = 10_000
# A run gives up after this many VOD error answers in a row. A refused batch is asked again id by
# id, so an id VOD chokes on costs one answer, and the ids beside it still get theirs.
MAX_ERRORS = 3
FINAL_STATUSES = ("success", "fail")


@dataclass
class Report:
    """What one reconciliation run did; its str() is the run's log line."""

    checked: int = 0
    finished: int = 0
    running: int = 0
    unchanged: int = 0
    lost: int = 0
    confirmed: int = 0
    contradicted: int = 0
    unlistable: int = 0
    malformed: int = 0
    refused: int = 0
    errors: int = 0
    stopped: str | None = None

    def __str__(self) -> str:
        text = (
            f"checked {self.checked} jobs: {self.finished} finished, {self.running} still "
            f"running, {self.lost} lost, {self.unchanged} unchanged"
        )
        if self.confirmed or self.contradicted:
            text += f"; callbacks {self.confirmed} confirmed, {self.contradicted} contradicted"
        if self.unlistable:
            text += (
                f"; {self.unlistable} stale jobs have no JobId (submit outcome unknown) and "
                "cannot be looked up by JobId: left to recovery by media (recover)"
            )
        if self.malformed:
            text += (
                f"; {self.malformed} JobIds are not of VOD's shape (a comma would split "
                "ListAIJob's list) and cannot be looked up: skipped"
            )
        if self.refused:
            text += f"; {self.refused} JobIds refused by VOD one by one"
        if self.errors:
            text += f"; {self.errors} VOD errors"
        if self.stopped:
            text += f"; stopped early: {self.stopped}"
        return text


async def jobs_to_reconcile(
    session: AsyncSession, settings: Settings, now: datetime, *, only_pending: bool = False
) -> dict[str, str | None]:
    """JobIds to look up, each once, with their jobs' regions: callbacks awaiting confirmation
    (on jobs, then held for a JobId no job has yet: no region known), then stale jobs (least
    recently checked first), then unfinished jobs older than the grace period (oldest first, at
    most `reconcile_batch`). `only_pending`: the first two groups alone. Ids are as stored:
    `reconcile_open_jobs` leaves out any not of VOD's shape."""
    pending = (
        select(Job.job_id, Job.region)
        .where(text(PENDING_SQL), Job.job_id.is_not(None))
        .order_by(Job.pending_since)
        .limit(MAX_PER_RUN)
    )
    # A callback whose JobId would resolve a job waiting for one is held until VOD confirms it
    # (`mark_pending`); literal UNCONFIRMED_SQL so ix_callback_events_unconfirmed serves it.
    held = (
        select(CallbackEvent.job_id, null())  # no job yet, so no region: the default's
        .where(
            text(UNCONFIRMED_SQL),
            CallbackEvent.job_id.is_not(None),
            ~exists().where(Job.job_id == CallbackEvent.job_id),
        )
        .order_by(CallbackEvent.job_id)
        .limit(MAX_PER_RUN)
    )
    stale = (
        select(Job.job_id, Job.region)
        .where(Job.stale == true(), Job.state.in_(UNFINISHED), Job.job_id.is_not(None))
        .order_by(Job.updated_at, Job.id)
        .limit(MAX_PER_RUN)
    )
    # Literal UNFLAGGED_SQL so the partial index ix_jobs_unflagged serves it (tracker/models.py).
    aged = (
        select(Job.job_id, Job.region)
        .where(
            text(UNFLAGGED_SQL),
            Job.submitted_at < now - settings.reconcile_grace,
            Job.job_id.is_not(None),
        )
        .order_by(Job.submitted_at, Job.id)
        .limit(settings.reconcile_batch)
    )
    ids: dict[str, str | None] = {}
    for query in (pending, held) if only_pending else (pending, held, stale, aged):
        for job_id, region in await session.execute(query):
            if job_id is not None and job_id not in ids and len(ids) < MAX_PER_RUN:
                ids[job_id] = region
    return ids


def by_region(ids: dict[str, str | None], default: str) -> dict[str, list[str]]:
    """JobIds grouped by region, in order; a job of no known region (learned from a callback)
    is looked up in `default`, the region whose callbacks `tracker vod callback set` sets up."""
    groups: dict[str, list[str]] = {}
    for job_id, region in ids.items():
        groups.setdefault(region or default, []).append(job_id)
    return groups


async def count_unlistable(session: AsyncSession) -> int:
    """Stale jobs without a JobId (submit outcome unknown): ListAIJob cannot look them up."""
    query = select(func.count()).where(
        Job.stale == true(), Job.state.in_(UNFINISHED), Job.job_id.is_(None)
    )
    return int(await session.scalar(query) or 0)


async def apply_list_result(
    session: AsyncSession,
    result: ListResult,
    now: datetime,
    report: Report,
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
                report.finished += 1
            else:
                report.unchanged += 1
        elif applied.changed:
            report.running += 1
        else:
            report.unchanged += 1
    for job_id in result.missing:
        # `lost` is not final (a late callback may still tell the truth), but it is no longer
        # unfinished: it leaves the stale set and any pending confirmation is void.
        report.lost += await transition(
            session,
            Job.job_id == job_id,
            JobState.LOST,
            now,
            stale=False,
            pending_status=None,
            pending_since=None,
        )
        verdicts[job_id] = None
    await settle_pending_events(session, verdicts, now, report)


async def settle_pending_events(
    session: AsyncSession, verdicts: dict[str, str | None], now: datetime, report: Report
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
    report.confirmed += len(agree)
    report.contradicted += len(disagree)
    metrics.CALLBACKS_APPLIED.inc(len(agree))
    if disagree:
        metrics.CALLBACKS_UNAPPLIED.labels(CONTRADICTED).inc(len(disagree))


async def reconcile_open_jobs(
    database: Database,
    vod: VodClients,
    settings: Settings,
    clock: Clock,
    *,
    keep_going: Callable[[], bool] = lambda: True,
    only_pending: bool = False,
) -> Report:
    """Look up every job due for reconciliation with ListAIJob, region by region with that
    region's client, 10 per call within the client's shared rate limit, and apply the answers.
    No database transaction is open while VOD is called: each answer is applied in its own short
    write. Stops early when `keep_going()` turns false (the lease was lost); a region whose VOD
    keeps failing is given up for this run, the others still go ahead. `only_pending`: just the
    callbacks awaiting confirmation (the frequent `confirm` job)."""
    report = Report()
    async with database.session() as session:
        ids = await jobs_to_reconcile(session, settings, clock(), only_pending=only_pending)
        if not only_pending:
            report.unlistable = await count_unlistable(session)
    # An id that is not of VOD's shape (stored before the receiver checked ids) would spoil any
    # batch it joined: a comma in it alone makes ListAIJob refuse the whole list.
    listable = {job_id: region for job_id, region in ids.items() if is_job_id(job_id)}
    report.malformed = len(ids) - len(listable)
    if report.malformed:
        log.warning("%d JobIds are not of VOD's shape: not looked up", report.malformed)
    stops: list[str] = []
    groups = by_region(listable, settings.vod_region)
    for region, job_ids in groups.items():
        if not keep_going():
            stops.append("lease lost")
            break
        stopped = await _reconcile_region(
            database, vod.for_region(region), job_ids, clock, keep_going, report
        )
        if stopped is not None:
            stops.append(stopped if len(groups) < 2 else f"{region}: {stopped}")
    report.stopped = "; ".join(stops) or None
    return report


async def _reconcile_region(
    database: Database,
    vod: VodClient,
    ids: Sequence[str],
    clock: Clock,
    keep_going: Callable[[], bool],
    report: Report,
) -> str | None:
    """One region's share of a run; returns why it stopped early, if it did."""
    batches = deque(_chunks(ids, LIST_LIMIT))
    errors_in_a_row = 0
    while batches:
        batch = batches.popleft()
        if not keep_going():
            return "lease lost"
        try:
            result = await vod.list_ai_jobs(batch)
        except (VodUnreachable, VodThrottled, VodOutcomeUnknown) as exc:
            report.errors += 1
            return f"{type(exc).__name__}: {exc}"
        except VodError as exc:
            report.errors += 1
            log.warning("ListAIJob in %s refused %d ids: %s", vod.region, len(batch), exc)
            if len(batch) > 1:  # ask for each alone: one bad id must not cost the others
                batches.extendleft([job_id] for job_id in reversed(batch))
                continue
            report.refused += 1
            errors_in_a_row += 1
            if errors_in_a_row >= MAX_ERRORS:
                return f"{errors_in_a_row} VOD errors in a row: {exc}"
            continue
        errors_in_a_row = 0
        report.checked += len(batch)
        async with database.write() as session:
            await apply_list_result(session, result, clock(), report, region=vod.region)
    return None


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
