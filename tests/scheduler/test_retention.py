"""Retention of stored callbacks."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from tests.factories import add_job, new_event
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.models import CallbackEvent, Job, JobState
from tracker.scheduler.service import Scheduler
from tracker.scheduler.sweep import flag_stale_jobs
from tracker.transitions import Applied

KEY_ID = "test-key-id"
KEY_SECRET = "test-key-secret"
# Indexes whose entries are bounded by the jobs in flight, for the sweep's predicate.
IN_FLIGHT_INDEXES = ("ix_jobs_unflagged", "ix_jobs_stale_state")
TRUTH = {"success": JobState.SUCCEEDED, "fail": JobState.FAILED}


async def sweep(database: Database, settings: Settings, now: datetime) -> int:
    async with database.write() as session:
        return await flag_stale_jobs(session, settings, now)


# --- retention and replay ------------------------------------------------------------------------


def event(job_id: str, status: str, received: datetime, **fields: Any) -> CallbackEvent:
    body = {
        "EventTime": received.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "EventType": "AIVideoTagComplete",
        "JobId": job_id,
        "MediaId": "m1",
        "Status": status,
        "Code": "0",
        "Message": "OK",
        "Data": json.dumps({"Keyword": [{"Tag": "cat"}]}),
    }
    return CallbackEvent(
        dedup_key=f"{job_id}:{status}:{received.timestamp()}",
        event_type="AIVideoTagComplete",
        job_id=job_id,
        media_id="m1",
        status=status,
        event_time=received,
        body=json.dumps(body),
        headers={},
        received_at=received,
        **fields,
    )


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
