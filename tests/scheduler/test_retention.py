"""Retention of stored callbacks."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from tests.factories import add_job, new_event
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import CallbackEvent, Job
from tracker.scheduler.service import Scheduler
from tracker.transitions import Applied

# --- retention and replay ------------------------------------------------------------------------


async def test_retention_deletes_old_callbacks_and_keeps_unapplied_ones(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    old = clock() - settings.event_retention - timedelta(hours=1)
    recent = clock() - timedelta(days=1)
    async with database.write() as session:
        session.add_all(
            [
                new_event("a", "success", old, applied=True),
                new_event("b", "success", old, applied=False, reason="already_final"),
                new_event("c", "success", old, applied=None),
                new_event("d", "success", old, applied=False, reason=Applied.PENDING.value),
                new_event("e", "success", recent, applied=True),
            ]
        )
    await add_job(database, at=old, job_id="a")
    scheduler = Scheduler(settings, database, vod=None, clock=clock)
    await scheduler.retention()
    await scheduler.retention()  # idempotent
    async with database.session() as session:
        left = set(await session.scalars(select(CallbackEvent.job_id)))
        jobs = list(await session.scalars(select(Job.job_id)))
    assert left == {"c", "d", "e"}
    assert jobs == ["a"]
