"""The status API: lookups, filters, keyset pages, stats, errors and auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tracker.db import Database
from tracker.models import Job, JobState, Origin

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(n: int, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "job_id": f"job-{n:04d}",
        "media_id": f"media-{n // 2:04d}",
        "type": "AIVideoTag" if n % 2 == 0 else "AIMediaDNA",
        "state": JobState.PROCESSING,
        "origin": Origin.SUBMITTED,
        # Every third job shares its time with the next, so ties are broken by id.
        "submitted_at": T0 + timedelta(minutes=n - n % 3),
        "updated_at": T0 + timedelta(minutes=n),
        **fields,
    }
    return Job(**values)


async def add(database: Database, *jobs: Job) -> None:
    async with database.write() as session:
        session.add_all(jobs)


async def test_get_job_shape(client: httpx.AsyncClient, database: Database) -> None:
    await add(
        database,
        make_job(
            1,
            state=JobState.SUCCEEDED,
            status="success",
            result={"Tag": ["cat"]},
            completed_at=T0 + timedelta(hours=1),
        ),
    )
    response = await client.get("/jobs/job-0001")
    assert response.status_code == 200
    assert response.json() == {
        "job_id": "job-0001",
        "media_id": "media-0000",
        "type": "AIMediaDNA",
        "state": "succeeded",
        "stale": False,
        "stale_at": None,
        "origin": "submitted",
        "status": "success",
        "code": None,
        "message": None,
        "result": {"Tag": ["cat"]},
        "submitted_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:01:00Z",
        "completed_at": "2026-01-01T01:00:00Z",
    }


async def test_pending_confirmation_is_shown(client: httpx.AsyncClient, database: Database) -> None:
    await add(database, make_job(1, pending_status="success", pending_since=T0))
    body = (await client.get("/jobs/job-0001")).json()
    assert body["state"] == "processing"
    assert body["pending_status"] == "success"
    assert body["pending_since"] == "2026-01-01T00:00:00Z"


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "job_not_found"
    assert (await client.get("/jobs/nope/events")).json()["error"] == "job_not_found"
