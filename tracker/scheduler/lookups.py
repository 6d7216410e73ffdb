"""Statements: the jobs the scheduler looks up at VOD, by JobId (reconcile) or by media (recover).

Reconciliation (`reconcile.py`) and recovery (`recover.py`) read these in a short session of
their own before they call VOD; the functions take that session and never commit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, null, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.config import Settings
from tracker.models import (
    PENDING_SQL,
    UNCONFIRMED_SQL,
    UNFINISHED,
    UNFLAGGED_SQL,
    CallbackEvent,
    Job,
    Origin,
)
from tracker.transitions import waiting_for_job_id

# Bound on one reconciliation run: 1,000 ListAIJob calls, about 35 s at VOD's 30 calls/s. The
# rest waits for the next run; stale jobs are taken least recently checked first, so every one
# gets its turn.
MAX_PER_RUN = 10_000
# One ListJobInfo per media: about a minute of calls at VOD's 15 per second. The rest waits for
# the next recovery run; the oldest attempts (nearest their give-up) go first.
MAX_MEDIA_PER_RUN = 900
MAX_JOBS_PER_RUN = 10_000  # rows read per recovery run, so a huge backlog is read in slices


# --- by JobId: reconciliation --------------------------------------------------------------------


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
    # Literal UNFLAGGED_SQL so the partial index ix_jobs_unflagged serves it (models/jobs.py).
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


async def count_unlistable(session: AsyncSession) -> int:
    """Stale jobs without a JobId (submit outcome unknown): ListAIJob cannot look them up."""
    query = select(func.count()).where(
        Job.stale == true(), Job.state.in_(UNFINISHED), Job.job_id.is_(None)
    )
    return int(await session.scalar(query) or 0)


# --- by media: recovery of lost JobIds ----------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A job waiting for its JobId, and the window its VOD job must have been created in."""

    id: int
    media_id: str
    type: str
    region: str | None  # None: learned from a callback, looked up in TRACKER_VOD_REGION
    started: datetime  # the submit attempt began (the claim, committed before the call)
    until: datetime | None  # the next attempt of the same media and type began, if any


async def jobs_to_recover(
    session: AsyncSession, settings: Settings, now: datetime
) -> list[Waiting]:
    """Jobs waiting for a JobId whose submit attempt began before `now - recover_after`, for at
    most MAX_MEDIA_PER_RUN media, oldest attempts first. `until` is when the next submitted job
    of the same media and type began (a `--force` resubmission), which bounds the window."""
    rows = (
        await session.execute(
            select(Job.id, Job.media_id, Job.type, Job.region, Job.submitted_at)
            .where(waiting_for_job_id(), Job.submitted_at < now - settings.recover_after)
            .order_by(Job.submitted_at, Job.id)
            .limit(MAX_JOBS_PER_RUN)
        )
    ).all()
    media: dict[str, None] = {}
    for row in rows:
        if len(media) >= MAX_MEDIA_PER_RUN and row.media_id not in media:
            continue
        media.setdefault(row.media_id)
    rows = [row for row in rows if row.media_id in media]
    if not rows:
        return []
    attempts: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for media_id, job_type, started in await session.execute(
        select(Job.media_id, Job.type, Job.submitted_at).where(
            Job.media_id.in_(list(media)), Job.origin == Origin.SUBMITTED.value
        )
    ):
        attempts[(media_id, job_type)].append(started)
    return [
        Waiting(
            row.id,
            row.media_id,
            row.type,
            row.region,
            row.submitted_at,
            min(
                (t for t in attempts[(row.media_id, row.type)] if t > row.submitted_at),
                default=None,
            ),
        )
        for row in rows
    ]


async def held_job_ids(session: AsyncSession, job_ids: Sequence[str]) -> set[str]:
    """The JobIds some row already holds."""
    if not job_ids:
        return set()
    return set(await session.scalars(select(Job.job_id).where(Job.job_id.in_(list(job_ids)))))
