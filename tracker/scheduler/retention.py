"""Retention: callbacks and job changes older than TRACKER_EVENT_RETENTION are deleted; jobs kept.

Flows: each takes the database and commits chunk by chunk. Only core tables are touched (the
callback inbox, the change log and its deliveries), so the scheduler needs no other wing for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select

from tracker.db import Database
from tracker.models import CallbackEvent, Delivery, JobChange
from tracker.transitions import Applied

RETENTION_INTERVAL = timedelta(days=1)
# Deleted in chunks so a large backlog never holds the (SQLite) writer for long.
DELETE_CHUNK = 5_000
MAX_DELETE_CHUNKS = 2_000


def _expired_events(before: datetime) -> Any:
    # Not applied yet (applied IS NULL) or awaiting VOD's confirmation: kept whatever their age,
    # so an acknowledged callback is never deleted unseen.
    return select(CallbackEvent.id).where(
        CallbackEvent.received_at < before,
        CallbackEvent.applied.is_not(None),
        or_(CallbackEvent.reason.is_(None), CallbackEvent.reason != Applied.PENDING.value),
    )


async def delete_old_events(database: Database, before: datetime) -> int:
    """Delete stored callbacks received before `before`; job rows are kept. Idempotent."""
    deleted = 0
    for _ in range(MAX_DELETE_CHUNKS):
        async with database.write() as session:
            chunk = _expired_events(before).limit(DELETE_CHUNK).scalar_subquery()
            result = await session.execute(
                delete(CallbackEvent)
                .where(CallbackEvent.id.in_(chunk))
                .execution_options(synchronize_session=False)
            )
        count = int(result.rowcount)  # type: ignore[attr-defined]
        deleted += count
        if count < DELETE_CHUNK:
            break
    return deleted


async def prune_changes(database: Database, before: datetime) -> int:
    """Delete the changes up to the last one that happened before `before`, and their
    deliveries; idempotent.

    A prefix of the log by `seq`, so a reader's cursor meets no hole: a change numbered before
    an older one goes with it. Deliveries go with their change: by then
    (TRACKER_EVENT_RETENTION, 30 days by default) the retry schedule (about 27 h) is long over.
    """
    async with database.session() as session:
        upto = await session.scalar(
            select(func.max(JobChange.seq)).where(JobChange.occurred_at < before)
        )
    if upto is None:
        return 0
    deleted = 0
    for _ in range(MAX_DELETE_CHUNKS):
        async with database.write() as session:
            seqs = list(
                await session.scalars(
                    select(JobChange.seq)
                    .where(JobChange.seq <= upto)
                    .order_by(JobChange.seq)
                    .limit(DELETE_CHUNK)
                )
            )
            if seqs:
                await session.execute(
                    delete(Delivery)
                    .where(Delivery.change_seq.in_(seqs))
                    .execution_options(synchronize_session=False)
                )
                await session.execute(
                    delete(JobChange)
                    .where(JobChange.seq.in_(seqs))
                    .execution_options(synchronize_session=False)
                )
        deleted += len(seqs)
        if len(seqs) < DELETE_CHUNK:
            break
    return deleted
