"""Rows for tests: jobs and stored callbacks with sensible defaults, any column overridable."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import select

from tracker.db import Database
from tracker.models import CallbackEvent, Job, JobState, Origin
from tracker.vod import VodClient

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new_job(
    job_id: str | None = None,
    state: JobState = JobState.PROCESSING,
    *,
    at: datetime = T0,
    **fields: Any,
) -> Job:
    """A submitted job, submitted and updated `at`; each on its own media unless told."""
    values: dict[str, Any] = {
        "media_id": f"media-{job_id or uuid4().hex}",
        "type": "AIVideoTag",
        "region": "cn-shanghai",
        "origin": Origin.SUBMITTED,
        "submitted_at": at,
        "updated_at": at,
        **fields,
    }
    return Job(job_id=job_id, state=state, **values)


async def add_job(
    database: Database,
    job_id: str | None = None,
    state: JobState = JobState.PROCESSING,
    *,
    at: datetime = T0,
    **fields: Any,
) -> int:
    """`new_job`, committed; its row id."""
    async with database.write() as session:
        job = new_job(job_id, state, at=at, **fields)
        session.add(job)
        await session.flush()
        return job.id


async def add_rows(database: Database, *rows: Any) -> None:
    async with database.write() as session:
        session.add_all(rows)


async def load_job(database: Database, id: int) -> Job:
    async with database.session() as session:
        job = await session.get(Job, id)
    assert job is not None
    return job


async def find_job(database: Database, job_id: str) -> Job:
    async with database.session() as session:
        job = await session.scalar(select(Job).where(Job.job_id == job_id))
    assert job is not None
    return job


def new_event(job_id: str, status: str, received: datetime, **fields: Any) -> CallbackEvent:
    """A stored completion callback of an AIVideoTag job, as the inbox keeps it."""
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


async def submit_recorded(
    vod: VodClient, database: Database, when: datetime, media_id: str, *types: str
) -> dict[str, int]:
    """SubmitAIJob on the simulator, recorded as the submitter would: JobId -> row id."""
    result = await vod.submit_ai_job(media_id, types or ("AIVideoTag", "AIMediaDNA"))
    return {
        job.job_id: await add_job(
            database, at=when, job_id=job.job_id, type=job.type, media_id=media_id
        )
        for job in result.jobs
    }
