"""Which waiting row a JobId we never saw may take (issue 23, P3): only one whose submit attempt
began before VOD created the job (VOD's whole seconds, less the skew recovery allows) and whose
next attempt did not begin before; otherwise the job is a `callback` row of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from starlette.applications import Starlette

from tests.factories import add_job, load_job
from tracker.app import create_app
from tracker.clock import FrozenClock, utcnow
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database
from tracker.fakevod import FakeVod
from tracker.models import CallbackEvent, Job, JobState, Origin
from tracker.transitions import CREATE_SKEW, Applied, Outcome, apply_outcome
from tracker.vod import VodClient

S = JobState
T0 = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)  # an attempt began mid-second


def done(job_id: str, created: datetime | None, event: datetime | None = None) -> Outcome:
    return Outcome(
        job_id=job_id,
        type="AIVideoTag",
        status="success",
        media_id="m1",
        data={"k": job_id},
        event_time=event or (created + timedelta(minutes=1) if created else None),
        created_at=created,
    )


async def apply(database: Database, outcome: Outcome) -> Applied:
    async with database.write() as session:
        return await apply_outcome(session, outcome, T0 + timedelta(hours=1))


@pytest.mark.parametrize(
    ("created", "owns"),
    [
        (T0 - timedelta(seconds=8), False),  # the case: made 8 s before the attempt
        (T0.replace(microsecond=0) - CREATE_SKEW - timedelta(seconds=1), False),
        (T0.replace(microsecond=0) - CREATE_SKEW, True),  # VOD's clock may be a little behind
        (T0.replace(microsecond=0), True),  # the attempt's own second, before its fraction
        (T0 + timedelta(seconds=2), True),
    ],
)
async def test_a_job_created_before_the_attempt_never_takes_its_row(
    database: Database, created: datetime, owns: bool
) -> None:
    row = await add_job(database, None, S.SUBMIT_UNKNOWN, at=T0, media_id="m1")
    applied = await apply(database, done("vod-job", created))
    waiting = await load_job(database, row)
    if owns:
        assert applied is Applied.RESOLVED
        assert (waiting.job_id, waiting.state) == ("vod-job", S.SUCCEEDED)
    else:
        assert applied is Applied.CREATED
        assert (waiting.job_id, waiting.state) == (None, S.SUBMIT_UNKNOWN)  # left to recovery
        async with database.session() as session:
            other = await session.scalar(select(Job).where(Job.job_id == "vod-job"))
        assert other is not None
        assert (other.origin, other.state, other.result) == (
            Origin.CALLBACK,
            S.SUCCEEDED,
            {"k": "vod-job"},
        )


async def test_a_callback_that_happened_before_the_attempt_never_takes_its_row(
    database: Database,
) -> None:
    """A callback says when it happened, not when its job was made: no later than that."""
    row = await add_job(database, None, S.SUBMIT_UNKNOWN, at=T0, media_id="m1")
    early = done("vod-early", None, event=T0 - timedelta(seconds=8))
    assert await apply(database, early) is Applied.CREATED
    assert (await load_job(database, row)).job_id is None
    late = done("vod-late", None, event=T0 + timedelta(seconds=30))
    assert await apply(database, late) is Applied.RESOLVED
    assert (await load_job(database, row)).job_id == "vod-late"


async def test_a_job_created_after_a_forced_resubmission_goes_to_the_newer_attempt(
    database: Database,
) -> None:
    resent = T0 + timedelta(minutes=5)  # `--force`: the first attempt is superseded
    first = await add_job(
        database, None, S.SUBMIT_UNKNOWN, at=T0, media_id="m1", superseded_at=resent
    )
    second = await add_job(database, None, S.SUBMIT_UNKNOWN, at=resent, media_id="m1")
    assert await apply(database, done("vod-2", T0 + timedelta(minutes=5, seconds=10))) is (
        Applied.RESOLVED
    )
    assert (await load_job(database, first)).job_id is None
    assert (await load_job(database, second)).job_id == "vod-2"
    assert await apply(database, done("vod-1", T0 + timedelta(seconds=1))) is Applied.RESOLVED
    assert (await load_job(database, first)).job_id == "vod-1"


async def inbox_verdict(database: Database, job_id: str) -> str | None:
    """What the inbox's applier made of the callback for `job_id`, once it has (it runs behind
    the 200)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        async with database.session() as session:
            event = await session.scalar(
                select(CallbackEvent).where(CallbackEvent.job_id == job_id)
            )
        if event is not None and event.applied is not None:
            return event.reason
        await asyncio.sleep(0.05)
    raise AssertionError(f"the callback for {job_id} was never applied")


# --- the scenario, with confirmation on, against the simulator -------------------------


@pytest.fixture
def now_clock(fake_vod: FakeVod) -> FrozenClock:
    clock = FrozenClock(utcnow())
    fake_vod.clock = clock  # the simulator's CreateTime follows the tracker's clock
    return clock


@pytest.fixture
async def app(vod_settings: Settings, now_clock: FrozenClock) -> AsyncIterator[Starlette]:
    settings = vod_settings.model_copy(update={"scheduler": "on"})
    assert settings.confirms_callbacks
    application = create_app(settings, clock=now_clock)
    async with LifespanManager(application):
        yield application


async def test_a_late_callback_of_an_older_job_leaves_the_lost_attempt_to_recovery(
    app: Starlette,
    fake_vod: FakeVod,
    vod: VodClient,
    database: Database,
    now_clock: FrozenClock,
) -> None:
    # A job of media M made at VOD by something else; 8 s later our SubmitAIJob's answer is lost.
    (older,) = (await vod.submit_ai_job("m-late", ["AIVideoTag"])).jobs
    now_clock.advance(timedelta(seconds=8))
    fake_vod.faults.lose_submit_next = 1
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        answer = await http.post("/jobs", json={"media_id": "m-late", "types": ["AIVideoTag"]})
        assert answer.status_code == 504, answer.text
        await fake_vod.idle(10)
        ours = next(j for j in fake_vod.jobs.values() if j.job_id != older.job_id)
        async with database.session() as session:
            (row,) = await session.scalars(select(Job.id).where(Job.media_id == "m-late"))
        # ...then the older job's callback arrives, late.
        now_clock.advance(timedelta(seconds=30))
        body = {
            "EventTime": now_clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "EventType": "AIVideoTagComplete",
            "JobId": older.job_id,
            "MediaId": "m-late",
            "Status": "success",
            "Data": fake_vod.jobs[older.job_id].data,
        }
        assert (await http.post("/callbacks/vod", json=body)).status_code == 200
        assert await inbox_verdict(database, older.job_id) == Applied.PENDING.value
        scheduler = context_of(app).scheduler
        assert scheduler is not None
        await scheduler.confirm()  # VOD's answer, with the older job's CreationTime, settles it

        waiting = await load_job(database, row)
        assert (waiting.job_id, waiting.state) == (None, S.SUBMIT_UNKNOWN)
        async with database.session() as session:
            learned = await session.scalar(select(Job).where(Job.job_id == older.job_id))
        assert learned is not None
        assert (learned.origin, learned.state) == (Origin.CALLBACK, S.SUCCEEDED)

        now_clock.advance(timedelta(minutes=3))
        await scheduler.recover()  # recovery finds the attempt's own job
        adopted = await load_job(database, row)
        assert (adopted.job_id, adopted.origin) == (ours.job_id, Origin.SUBMITTED)
        assert adopted.state in (S.PROCESSING, S.SUCCEEDED)
