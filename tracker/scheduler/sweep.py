"""The stale sweep: flag jobs that stay unfinished too long, a bounded chunk per transaction.

Statements (`stale_sweep`, `due_job_ids`, `flag_stale_jobs`, `count_stale`) take a session and
never commit; `sweep_stale_jobs` is a flow: it takes the database and commits each chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    Update,
    case,
    func,
    literal,
    literal_column,
    not_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.config import Settings
from tracker.db import Database
from tracker.models import UNFINISHED, UNFLAGGED_SQL, Job
from tracker.vod import JOB_TYPES

JOBS = cast(Table, Job.__table__)
SWEEP_LOCK = 0x7472_6B73_7765_6570  # PostgreSQL advisory lock key: "trksweep"
# Jobs flagged per transaction. Each chunk is one write transaction, which SQLite's webhook inbox
# waits behind: 1,000 flags and their change-log rows hold it about 10-15 ms on 2 cores, about
# 100 ms with the machine loaded 6x over. Much smaller chunks cost more in commits than in rows
# (100 per chunk: 3x the CPU of one statement), much larger ones hold the writer longer.
CHUNK = 1_000
# Due jobs' ids read at a time, then flagged in id order, CHUNK at a time.
PASS = 100_000


def _due(settings: Settings, now: datetime, *, plain: bool = False) -> list[Any]:
    """Unfinished, unflagged jobs past their type's threshold.

    `plain`: the same conditions on `+column`, which SQLite answers from no index; it then
    looks a chunk's jobs up by id instead of walking every due job for each one."""

    def column(name: str) -> Any:
        return literal_column(f"+jobs.{name}", JOBS.c[name].type) if plain else JOBS.c[name]

    submitted_at = column("submitted_at")
    default = now - settings.stale_after
    cutoffs = {t: now - settings.stale_after_for(t) for t in JOB_TYPES}
    latest = max([default, *cutoffs.values()])
    unflagged = (
        [not_(column("stale")), column("state").in_(UNFINISHED)] if plain else [text(UNFLAGGED_SQL)]
    )
    where: list[Any] = [*unflagged, submitted_at < latest]
    if any(cutoff != default for cutoff in cutoffs.values()):
        when = {t: literal(c, JOBS.c.submitted_at.type) for t, c in cutoffs.items()}
        otherwise = literal(default, JOBS.c.submitted_at.type)
        where.append(submitted_at < case(when, value=column("type"), else_=otherwise))
    return where


def stale_sweep(
    settings: Settings,
    now: datetime,
    ids: Sequence[int] | None = None,
    *,
    sqlite: bool = False,
) -> Update:
    """The sweep's UPDATE (see `flag_stale_jobs`): every due job, or those of `ids`.

    With `ids` the conditions are checked again, since the ids were read before: a job finished
    or flagged since is left alone (PostgreSQL also re-checks a row a callback changes while the
    UPDATE waits for it). The ids drive the UPDATE through the primary key (on SQLite the
    conditions are written so that no index can answer them instead).
    """
    if ids is None:
        statement = update(Job).where(*_due(settings, now))
    else:
        statement = update(Job).where(Job.id.in_(ids), *_due(settings, now, plain=sqlite))
    return statement.values(stale=True, stale_at=now).execution_options(synchronize_session=False)


def due_job_ids(settings: Settings, now: datetime, limit: int) -> Select[int]:
    """Up to `limit` due jobs' ids, read from the partial index `ix_jobs_unflagged`."""
    return select(Job.id).where(*_due(settings, now)).limit(limit)


async def flag_stale_jobs(
    session: AsyncSession, settings: Settings, now: datetime, ids: Sequence[int] | None = None
) -> int:
    """Flag unfinished jobs older than their type's threshold (those of `ids` only, if given):
    `stale = true, stale_at = now` where not already stale; return how many were flagged.

    One set-based UPDATE for every threshold at once (per-type overrides through a CASE on the
    type). Its range `submitted_at < the latest cutoff` runs on the partial index
    `ix_jobs_unflagged`, which holds only unfinished, unflagged jobs, so the cost follows the rows
    in flight, not the table. Two replicas running it at once flag each job once: the second
    waits for the row lock and re-checks `NOT stale` (PostgreSQL) or runs after the first
    (SQLite's single writer). A flagged job that finishes is unflagged by `transition` and keeps
    `stale_at`.
    """
    sqlite = session.get_bind().dialect.name != "postgresql"
    if not sqlite:
        # Replicas' sweeps take turns: two UPDATEs locking the same rows in different orders
        # (different plans) could deadlock. Released at commit.
        await session.execute(select(func.pg_advisory_xact_lock(SWEEP_LOCK)))
    result = await session.execute(stale_sweep(settings, now, ids, sqlite=sqlite))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def sweep_stale_jobs(
    database: Database, settings: Settings, now: datetime, chunk: int = CHUNK
) -> int:
    """Flag every due job (`flag_stale_jobs`), `chunk` jobs per transaction; return how many
    were flagged. The due jobs' ids are read first, and flagged in id order: a chunk's jobs and
    their change-log entries sit together, so a page is written by one chunk, not by each.
    Each job is flagged once (by one chunk of one replica) with the same `stale_at`; a crash
    leaves the rest to the next run."""
    flagged = 0
    while True:
        async with database.session() as session:
            ids = sorted(await session.scalars(due_job_ids(settings, now, PASS)))
        for start in range(0, len(ids), chunk):
            async with database.write() as session:
                flagged += await flag_stale_jobs(session, settings, now, ids[start : start + chunk])
            await asyncio.sleep(0)  # a writer waiting for the connection (the inbox) goes first
        if len(ids) < PASS:
            return flagged


async def count_stale(session: AsyncSession) -> int:
    query = select(func.count()).where(Job.stale == true(), Job.state.in_(UNFINISHED))
    return int(await session.scalar(query) or 0)
