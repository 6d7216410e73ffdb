"""Rows for tests: jobs, stored callbacks, heartbeats, subscriptions and their deliveries.

Every row a test puts in the database by hand is built here, with sensible defaults and any column
overridable; `new_*` builds a row, `add_*` commits rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import select

from tracker.db import Database
from tracker.models import (
    CallbackEvent,
    Delivery,
    Heartbeat,
    Job,
    JobState,
    Origin,
    Subscription,
)
from tracker.vod import VodClient

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a subscription's signing secret


def job_values(
    job_id: str | None = None,
    state: JobState = JobState.PROCESSING,
    *,
    at: datetime = T0,
    **fields: Any,
) -> dict[str, Any]:
    """`new_job`'s columns, for a bulk INSERT of many jobs."""
    return {
        "job_id": job_id,
        "state": state,
        "media_id": f"media-{job_id or uuid4().hex}",
        "type": "AIVideoTag",
        "region": "cn-shanghai",
        "origin": Origin.SUBMITTED,
        "submitted_at": at,
        "updated_at": at,
        **fields,
    }


def new_job(
    job_id: str | None = None,
    state: JobState = JobState.PROCESSING,
    *,
    at: datetime = T0,
    **fields: Any,
) -> Job:
    """A submitted job, submitted and updated `at`; each on its own media unless told."""
    return Job(**job_values(job_id, state, at=at, **fields))


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


async def add_rows(database: Database | str, *rows: Any) -> None:
    """Commit `rows` in one transaction, in order; a URL for a synchronous test's database."""
    if isinstance(database, str):
        opened = Database(database)
        try:
            await add_rows(opened, *rows)
        finally:
            await opened.dispose()
        return
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


def new_event(
    job_id: str | None = "j1",
    status: str | None = "success",
    received: datetime = T0,
    **fields: Any,
) -> CallbackEvent:
    """A stored completion callback of an AIVideoTag job, as the inbox keeps it: its body says
    what its columns say unless one is given."""
    values: dict[str, Any] = {
        "dedup_key": f"{job_id}:{status}:{received.timestamp()}",
        "event_type": "AIVideoTagComplete",
        "job_id": job_id,
        "media_id": "m1",
        "status": status,
        "event_time": received,
        "headers": {},
        "received_at": received,
        **fields,
    }
    if "body" not in values:
        event_time = values["event_time"]
        body = {
            "EventTime": event_time.strftime("%Y-%m-%dT%H:%M:%SZ") if event_time else None,
            "EventType": values["event_type"],
            "JobId": values["job_id"],
            "MediaId": values["media_id"],
            "Status": values["status"],
            "Code": "0",
            "Message": "OK",
            "Data": json.dumps({"Keyword": [{"Tag": "cat"}]}),
        }
        values["body"] = json.dumps(body)
    return CallbackEvent(**values)


def new_heartbeat(name: str = "sweep", *, at: datetime = T0, **fields: Any) -> Heartbeat:
    """A scheduled job's last run, started `at` by replica `a` and not finished unless told."""
    return Heartbeat(**{"name": name, "owner": "a", "started_at": at, **fields})


def new_subscription(
    url: str = "https://hooks.example.com/1", *, at: datetime = T0, **fields: Any
) -> Subscription:
    """An enabled subscription to every change from the start of the log, made `at` by the API."""
    values: dict[str, Any] = {
        "url": url,
        "event_types": None,
        "enabled": True,
        "secret": SECRET,
        "source": "api",
        "cursor_seq": 0,
        "created_at": at,
        "updated_at": at,
        **fields,
    }
    return Subscription(**values)


def new_delivery(
    subscription_id: int,
    change_seq: int,
    status: str = "pending",
    *,
    at: datetime = T0,
    **fields: Any,
) -> Delivery:
    """One change's delivery to a subscription, in `status` as of `at`: a `pending` one is due
    then, a `sending` one leased for a minute; one attempt made."""
    values: dict[str, Any] = {
        "subscription_id": subscription_id,
        "change_seq": change_seq,
        "status": status,
        "attempts": 1,
        "next_attempt_at": at if status == "pending" else None,
        "lease_until": at + timedelta(minutes=1) if status == "sending" else None,
        "trigger": "scheduled",
        "created_at": at,
        "updated_at": at,
        **fields,
    }
    return Delivery(**values)


async def add_subscription(
    database: Database, *, deliveries: Sequence[str] = (), at: datetime = T0, **fields: Any
) -> int:
    """`new_subscription`, committed with one delivery in each of `deliveries`' statuses (of
    changes 1, 2, ...); its id."""
    async with database.write() as session:
        subscription = new_subscription(at=at, **fields)
        session.add(subscription)
        await session.flush()
        session.add_all(
            new_delivery(subscription.id, seq, status, at=at)
            for seq, status in enumerate(deliveries, 1)
        )
        return subscription.id


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
