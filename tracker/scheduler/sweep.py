"""The stale sweep: flag jobs that stay unfinished too long, in one statement.

Statements: take a session, never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Update, case, func, literal, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.config import Settings
from tracker.models import UNFINISHED, UNFLAGGED_SQL, Job
from tracker.vod import JOB_TYPES

SWEEP_LOCK = 0x7472_6B73_7765_6570  # PostgreSQL advisory lock key: "trksweep"


def stale_sweep(settings: Settings, now: datetime) -> Update:
    """The sweep's one UPDATE (see `flag_stale_jobs`)."""
    default = now - settings.stale_after
    cutoffs = {t: now - settings.stale_after_for(t) for t in JOB_TYPES}
    latest = max([default, *cutoffs.values()])
    where: list[Any] = [text(UNFLAGGED_SQL), Job.submitted_at < latest]
    if any(cutoff != default for cutoff in cutoffs.values()):
        when = {t: literal(c, Job.submitted_at.type) for t, c in cutoffs.items()}
        otherwise = literal(default, Job.submitted_at.type)
        where.append(Job.submitted_at < case(when, value=Job.type, else_=otherwise))
    return (
        update(Job)
        .where(*where)
        .values(stale=True, stale_at=now)
        .execution_options(synchronize_session=False)
    )


async def flag_stale_jobs(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """Flag unfinished jobs older than their type's threshold: `stale = true, stale_at = now`
    where not already stale; return how many were flagged.

    One set-based UPDATE for every threshold at once (per-type overrides through a CASE on the
    type). Its range `submitted_at < the latest cutoff` runs on the partial index
    `ix_jobs_unflagged`, which holds only unfinished, unflagged jobs, so the cost follows the rows
    in flight, not the table. Two replicas running it at once flag each job once: the second
    waits for the row lock and re-checks `NOT stale` (PostgreSQL) or runs after the first
    (SQLite's single writer). A flagged job that finishes is unflagged by `transition` and keeps
    `stale_at`.
    """
    if session.get_bind().dialect.name == "postgresql":
        # Replicas' sweeps take turns: two UPDATEs locking the same rows in different orders
        # (different plans) could deadlock. Released at commit.
        await session.execute(select(func.pg_advisory_xact_lock(SWEEP_LOCK)))
    result = await session.execute(stale_sweep(settings, now))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def count_stale(session: AsyncSession) -> int:
    query = select(func.count()).where(Job.stale == true(), Job.state.in_(UNFINISHED))
    return int(await session.scalar(query) or 0)
