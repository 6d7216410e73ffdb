"""The stale sweep: flag jobs that stay unfinished too long, a bounded chunk per transaction.

Statements (`stale_sweep`, `flag_stale_jobs`, `count_stale`) take a session and never commit;
`sweep_stale_jobs` is a flow: it takes the database and commits each chunk.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import Update, any_, case, func, literal, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.config import Settings
from tracker.db import Database
from tracker.models import UNFINISHED, UNFLAGGED_SQL, Job
from tracker.vod import JOB_TYPES

SWEEP_LOCK = 0x7472_6B73_7765_6570  # PostgreSQL advisory lock key: "trksweep"
# Jobs flagged per transaction. Each chunk is one write transaction, which SQLite's webhook inbox
# waits behind: 1,000 flags (and their change-log rows) take about 10-15 ms on SQLite on 2 cores,
# about 100 ms with the machine loaded 6x over. Much smaller chunks cost more in commits than in
# rows (100 per chunk: 3x the CPU of one statement), much larger ones hold the writer longer.
CHUNK = 1_000


def _due(settings: Settings, now: datetime) -> list[Any]:
    """Unfinished, unflagged jobs past their type's threshold."""
    default = now - settings.stale_after
    cutoffs = {t: now - settings.stale_after_for(t) for t in JOB_TYPES}
    latest = max([default, *cutoffs.values()])
    where: list[Any] = [text(UNFLAGGED_SQL), Job.submitted_at < latest]
    if any(cutoff != default for cutoff in cutoffs.values()):
        when = {t: literal(c, Job.submitted_at.type) for t, c in cutoffs.items()}
        otherwise = literal(default, Job.submitted_at.type)
        where.append(Job.submitted_at < case(when, value=Job.type, else_=otherwise))
    return where


def stale_sweep(
    settings: Settings, now: datetime, limit: int | None = None, *, postgresql: bool = False
) -> Update:
    """The sweep's UPDATE (see `flag_stale_jobs`): every due job, or a chunk of `limit` of them.

    A chunk is chosen in the order of the partial index `ix_jobs_unflagged`, so that choosing
    it reads that index up to the chunk, and the UPDATE is driven by the chosen ids through the
    primary key; it does not look for each of them in the due jobs. On PostgreSQL the ids come
    as an array (`id = ANY(ARRAY(...))`: an index condition whatever the estimates), and the
    UPDATE repeats the conditions, which PostgreSQL evaluates again on a row a callback changed
    meanwhile (a job it just finished is not flagged). SQLite's single writer changes nothing
    under a statement.
    """
    due = _due(settings, now)
    if limit is None:
        statement = update(Job).where(*due)
    else:
        chunk = (
            select(Job.id).where(*due).order_by(Job.state, Job.submitted_at).limit(limit)
        ).scalar_subquery()
        if postgresql:
            statement = update(Job).where(Job.id == any_(func.array(chunk)), *due)
        else:
            statement = update(Job).where(Job.id.in_(chunk))
    return statement.values(stale=True, stale_at=now).execution_options(synchronize_session=False)


async def flag_stale_jobs(
    session: AsyncSession, settings: Settings, now: datetime, limit: int | None = None
) -> int:
    """Flag unfinished jobs older than their type's threshold (at most `limit` of them):
    `stale = true, stale_at = now` where not already stale; return how many were flagged.

    One set-based UPDATE for every threshold at once (per-type overrides through a CASE on the
    type). Its range `submitted_at < the latest cutoff` runs on the partial index
    `ix_jobs_unflagged`, which holds only unfinished, unflagged jobs, so the cost follows the rows
    in flight, not the table. Two replicas running it at once flag each job once: the second
    waits for the row lock and re-checks `NOT stale` (PostgreSQL) or runs after the first
    (SQLite's single writer). A flagged job that finishes is unflagged by `transition` and keeps
    `stale_at`.
    """
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        # Replicas' sweeps take turns: two UPDATEs locking the same rows in different orders
        # (different plans) could deadlock. Released at commit.
        await session.execute(select(func.pg_advisory_xact_lock(SWEEP_LOCK)))
    result = await session.execute(stale_sweep(settings, now, limit, postgresql=postgresql))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def sweep_stale_jobs(
    database: Database, settings: Settings, now: datetime, chunk: int = CHUNK
) -> int:
    """`flag_stale_jobs` until no due job is left, `chunk` jobs per transaction; return how many
    were flagged. Each chunk flags only jobs not flagged yet, so each job is flagged once, by
    one chunk of one replica, with the same `stale_at`; a crash leaves the rest to the next run.
    """
    flagged = 0
    while True:
        async with database.write() as session:
            count = await flag_stale_jobs(session, settings, now, limit=chunk)
        flagged += count
        if count == 0:  # not `< chunk`: a callback may have finished a job the chunk picked
            return flagged
        await asyncio.sleep(0)  # a writer waiting for the connection (the inbox) goes first


async def count_stale(session: AsyncSession) -> int:
    query = select(func.count()).where(Job.stale == true(), Job.state.in_(UNFINISHED))
    return int(await session.scalar(query) or 0)
