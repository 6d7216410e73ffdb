"""Lost JobIds recovered by media (ListJobInfo), against the simulator on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import select, update
from starlette.applications import Starlette

from tests.factories import add_job, load_job
from tracker.app import create_app
from tracker.clock import FrozenClock, utcnow
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database
from tracker.fakevod import FakeVod, Faults
from tracker.models import Heartbeat, Job, JobState, Origin
from tracker.scheduler.recover import NO_SUCH_JOB, recover_lost_job_ids
from tracker.scheduler.service import Scheduler
from tracker.vod import VodClient, VodClients

S = JobState


@pytest.fixture
def now_clock(fake_vod: FakeVod) -> FrozenClock:
    # One injected clock for the tracker and for the simulator's job times (CreateTime), moved
    # forward instead of sleeping; it starts at the wall clock, which VOD's signatures need.
    clock = FrozenClock(utcnow())
    fake_vod.clock = clock
    return clock


@pytest.fixture
async def app(vod_settings: Settings, now_clock: FrozenClock) -> AsyncIterator[Starlette]:
    # The scheduler is built as `tracker serve` builds it; tests call its jobs themselves.
    settings = vod_settings.model_copy(update={"scheduler": "on"})
    application = create_app(settings, clock=now_clock)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http


def scheduler_of(app: Starlette) -> Scheduler:
    scheduler = context_of(app).scheduler
    assert scheduler is not None
    return scheduler


async def jobs_of(database: Database, media_id: str) -> list[Job]:
    async with database.session() as session:
        query = select(Job).where(Job.media_id == media_id).order_by(Job.id)
        return list(await session.scalars(query))


async def recover(
    database: Database, vod: VodClient, settings: Settings, clock: FrozenClock
) -> str:
    clients = VodClients.of(settings, vod)
    return str(await recover_lost_job_ids(database, clients, settings, clock))


async def test_a_lost_submit_answer_is_recovered_end_to_end(
    app: Starlette,
    client: httpx.AsyncClient,
    fake_vod: FakeVod,
    database: Database,
    now_clock: FrozenClock,
) -> None:
    # VOD creates the job but the connection closes before its answer; its callback is lost too.
    fake_vod.faults.lose_submit_next = 1
    answer = await client.post("/jobs", json={"media_id": "m-lost", "types": ["AIVideoTag"]})
    assert answer.status_code == 504
    (row,) = await jobs_of(database, "m-lost")
    assert (row.state, row.job_id) == (S.SUBMIT_UNKNOWN, None)
    (truth,) = fake_vod.jobs.values()
    await fake_vod.idle(10)
    assert truth.job_id in fake_vod.dropped  # no callback will ever resolve it

    scheduler = scheduler_of(app)
    now_clock.advance(timedelta(minutes=1))
    await scheduler.recover()  # too early: the submitter may still be waiting for VOD
    assert (await load_job(database, row.id)).job_id is None

    now_clock.advance(timedelta(minutes=2))
    await scheduler.recover()
    job = await load_job(database, row.id)
    assert (job.job_id, job.state) == (truth.job_id, S.SUCCEEDED)
    assert job.result == json.loads(truth.data)
    assert fake_vod.submit_calls == 1  # found, not sent again

    shown = await client.get(f"/jobs/{truth.job_id}")
    assert shown.status_code == 200
    assert shown.json()["state"] == "succeeded"
    async with database.session() as session:
        beat = await session.get(Heartbeat, "recover")
    assert beat is not None
    assert beat.ok
    assert beat.summary is not None
    assert beat.summary.startswith("looked up 1 media for 1 jobs without a JobId: 1 adopted")

    # Idempotent: nothing is left waiting, nothing is looked up again.
    requests = fake_vod.requests
    await scheduler.recover()
    assert fake_vod.requests == requests


async def test_a_crashed_submitter_s_jobs_are_recovered_by_type(
    vod: VodClient,
    vod_settings: Settings,
    fake_vod: FakeVod,
    database: Database,
    now_clock: FrozenClock,
) -> None:
    started = now_clock()
    rows = {
        t: await add_job(database, None, S.SUBMITTING, at=started, media_id="m-crash", type=t)
        for t in ("AIVideoTag", "AIMediaDNA")
    }
    # The submitter sent the call and died before recording anything.
    sent = await vod.submit_ai_job("m-crash", ["AIVideoTag", "AIMediaDNA"])
    # VOD also has an older job of this media, from before the attempt began, and one it ran on
    # its own (fingerprinting after upload) a second before ours, within the slack of VOD's
    # whole-second CreateTime: the earliest DNA job that fits, but not ours.
    old = fake_vod.emit_unsolicited("m-crash")
    old.creation_time = started - timedelta(minutes=5)
    auto = fake_vod.emit_unsolicited("m-crash")
    auto.creation_time = started - timedelta(seconds=1)

    now_clock.advance(timedelta(minutes=3))
    summary = await recover(database, vod, vod_settings, now_clock)
    assert summary.startswith("looked up 1 media for 2 jobs without a JobId: 2 adopted")
    for job in sent.jobs:
        adopted = await load_job(database, rows[job.type])
        assert adopted.job_id == job.job_id
        assert adopted.state in (S.PROCESSING, S.SUCCEEDED)


async def test_a_job_vod_never_created_is_given_up_and_submit_sends_it_again(
    client: httpx.AsyncClient,
    app: Starlette,
    fake_vod: FakeVod,
    vod_settings: Settings,
    database: Database,
    database_url: str,
    now_clock: FrozenClock,
) -> None:
    # A 500 before anything was done: the outcome is unknown to the tracker, VOD has no job.
    fake_vod.faults.submit_error_next = 1
    answer = await client.post("/jobs", json={"media_id": "m-none", "types": "AIMediaDNA"})
    assert answer.status_code == 504
    (row,) = await jobs_of(database, "m-none")
    assert row.state == S.SUBMIT_UNKNOWN

    scheduler = scheduler_of(app)
    now_clock.advance(timedelta(minutes=3))
    await scheduler.recover()
    assert (await load_job(database, row.id)).state == S.SUBMIT_UNKNOWN  # still waiting

    now_clock.advance(timedelta(minutes=28))
    await scheduler.recover()
    job = await load_job(database, row.id)
    assert (job.state, job.job_id, job.code) == (S.SUBMIT_FAILED, None, NO_SUCH_JOB)
    assert job.message is not None
    assert job.message.startswith("VOD has no such job")
    assert fake_vod.jobs == {}

    # `tracker submit` sends it again: a submit_failed job no longer blocks its media and type.
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_VOD_ENDPOINT": fake_vod.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": vod_settings.access_key_id or "",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": vod_settings.access_key_secret.get_secret_value()
        if vod_settings.access_key_secret
        else "",
    }
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tracker", "submit", "--types", "AIMediaDNA", "m-none"],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    (created,) = fake_vod.jobs.values()
    old, new = await jobs_of(database, "m-none")
    assert (old.id, old.state) == (row.id, S.SUBMIT_FAILED)
    assert (new.job_id, new.state) == (created.job_id, S.PROCESSING)


async def test_a_job_held_by_another_row_is_not_adopted_twice(
    vod: VodClient,
    vod_settings: Settings,
    fake_vod: FakeVod,
    database: Database,
    now_clock: FrozenClock,
) -> None:
    started = now_clock()
    media = "m-held"
    first = await add_job(database, None, S.SUBMIT_UNKNOWN, at=started, media_id=media)
    (made,) = (await vod.submit_ai_job(media, ["AIVideoTag"])).jobs
    # A callback already gave this JobId a row of its own (origin callback).
    other = await add_job(
        database, made.job_id, S.PROCESSING, at=started, media_id=media, origin=Origin.CALLBACK
    )
    now_clock.advance(timedelta(minutes=3))
    summary = await recover(database, vod, vod_settings, now_clock)
    assert "0 adopted" in summary
    assert (await load_job(database, first)).job_id is None

    # A `--force` resubmission of the media and type (the old row is superseded) whose answer
    # was lost too, and one new VOD job: each row takes at most one job, each job one row.
    async with database.write() as session:
        await session.execute(update(Job).where(Job.id == first).values(superseded_at=now_clock()))
    second = await add_job(database, None, S.SUBMITTING, at=now_clock(), media_id=media)
    now_clock.advance(timedelta(seconds=2))
    (again,) = (await vod.submit_ai_job(media, ["AIVideoTag"])).jobs
    now_clock.advance(timedelta(minutes=3))
    await recover(database, vod, vod_settings, now_clock)
    await recover(database, vod, vod_settings, now_clock)
    rows = await jobs_of(database, media)
    holders = [r.id for r in rows if r.job_id == again.job_id]
    assert holders == [second]
    assert [r.id for r in rows if r.job_id == made.job_id] == [other]
    assert (await load_job(database, first)).job_id is None


async def test_a_job_created_before_the_attempt_is_not_adopted(
    vod: VodClient,
    vod_settings: Settings,
    fake_vod: FakeVod,
    database: Database,
    now_clock: FrozenClock,
) -> None:
    (earlier,) = (await vod.submit_ai_job("m-before", ["AIVideoTag"])).jobs
    # That job's answer was recorded elsewhere and lost from here; a minute later an attempt
    # began whose job VOD never created.
    now_clock.advance(timedelta(minutes=1))
    row = await add_job(
        database, None, S.SUBMIT_UNKNOWN, at=now_clock(), media_id="m-before", type="AIVideoTag"
    )
    now_clock.advance(timedelta(minutes=3))
    summary = await recover(database, vod, vod_settings, now_clock)
    assert "0 adopted" in summary
    assert "1 still waiting" in summary
    assert (await load_job(database, row)).job_id is None

    now_clock.advance(timedelta(minutes=30))
    await recover(database, vod, vod_settings, now_clock)
    job = await load_job(database, row)
    assert (job.state, job.job_id) == (S.SUBMIT_FAILED, None)
    assert earlier.job_id in fake_vod.jobs


class ListAIJobBlind(FakeVod):
    """A VOD whose ListAIJob does not know the ids ListJobInfo lists (an open question of
    vod-joblookup-reference.md 8): only GetJobDetail can type them."""

    def _list(self, params: Mapping[str, str]) -> dict[str, Any]:
        ids = [i for i in params.get("JobIds", "").split(",") if i]
        return {"AIJobList": {"AIJob": []}, "NonExistAIJobIds": {"String": ids}}


async def test_get_job_detail_types_what_list_ai_job_does_not_know(
    database: Database, database_url: str, now_clock: FrozenClock
) -> None:
    blind = ListAIJobBlind(
        access_key_id="k-blind",
        access_key_secret="BlindSecret1",
        faults=Faults(delay=60.0, drop_rate=1.0),
    )
    blind.clock = now_clock
    await blind.start()
    settings = Settings(
        database_url=database_url,
        access_key_id="k-blind",
        access_key_secret=SecretStr("BlindSecret1"),
        vod_endpoint=blind.url,
    )
    try:
        async with VodClient(settings) as vod:
            started = now_clock()
            tag = await add_job(database, None, S.SUBMIT_UNKNOWN, at=started, media_id="m-b")
            dna = await add_job(
                database, None, S.SUBMIT_UNKNOWN, at=started, media_id="m-b", type="AIMediaDNA"
            )
            (made,) = (await vod.submit_ai_job("m-b", ["AIVideoTag"])).jobs
            blind.emit_unsolicited("m-b")  # a DNA job VOD ran on its own: Trigger Auto
            now_clock.advance(timedelta(minutes=3))
            summary = await recover(database, vod, settings, now_clock)
    finally:
        await blind.stop()
    assert "1 adopted" in summary
    job = await load_job(database, tag)
    assert (job.job_id, job.state) == (made.job_id, S.PROCESSING)
    assert (await load_job(database, dna)).job_id is None


async def test_lookups_keep_to_vod_s_fifteen_calls_a_second(
    vod: VodClient,
    vod_settings: Settings,
    fake_vod: FakeVod,
    database: Database,
    now_clock: FrozenClock,
) -> None:
    for n in range(31):
        await add_job(database, None, S.SUBMIT_UNKNOWN, at=now_clock(), media_id=f"m-qps-{n}")
    fake_vod.faults.qps = 15.0
    now_clock.advance(timedelta(minutes=3))
    began = time.monotonic()
    summary = await recover(database, vod, vod_settings, now_clock)
    elapsed = time.monotonic() - began
    assert summary.startswith("looked up 31 media for 31 jobs")
    assert elapsed >= 1.9  # 31 ListJobInfo calls evenly spaced at 15 per second
    assert fake_vod.refused == {}
