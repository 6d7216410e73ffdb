"""Retention: stored callbacks older than TRACKER_EVENT_RETENTION are deleted; jobs are kept.

A flow: takes the database and commits chunk by chunk.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select

from tracker.db import Database
from tracker.models import CallbackEvent
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
