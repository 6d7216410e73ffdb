"""Reconciliation with VOD, against the simulator."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta

import pytest
from aiohttp import web
from sqlalchemy import select, text

from tests.factories import add_job, load_job, new_event, submit_recorded
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.fakevod import FakeVod
from tracker.models import (
    CONTRADICTED,
    UNCONFIRMED_SQL,
    CallbackEvent,
    Heartbeat,
    Job,
    JobState,
)
from tracker.scheduler.service import Scheduler
from tracker.scheduler.sweep import flag_stale_jobs
from tracker.transitions import Applied, Outcome, mark_pending
from tracker.vod import VodClient, VodClients

TRUTH = {"success": JobState.SUCCEEDED, "fail": JobState.FAILED}


async def sweep(database: Database, settings: Settings, now: datetime) -> int:
    async with database.write() as session:
        return await flag_stale_jobs(session, settings, now)


# --- reconciliation against the simulator --------------------------------------------------------


async def test_dropped_callbacks_are_found_and_reach_their_true_state(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    fake_vod: FakeVod,
    clock: FrozenClock,
) -> None:
    fake_vod.faults.fail_rate = 0.5
    rows: dict[str, int] = {}
    for media in ("m1", "m2", "m3"):
        rows |= await submit_recorded(vod, database, clock(), media)
    await fake_vod.idle(10)
    assert set(fake_vod.dropped) == set(rows)  # no callback reached anyone
    assert {fake_vod.jobs[j].status for j in rows} == {"success", "fail"}

    scheduler = Scheduler(vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock)
    clock.advance(timedelta(hours=1, minutes=1))
    await scheduler.sweep()
    await scheduler.reconcile()

    for job_id, id in rows.items():
        job = await load_job(database, id)
        truth = fake_vod.jobs[job_id]
        assert job.state == TRUTH[truth.status], job_id
        assert (job.stale, job.stale_at) == (False, clock())
        assert job.code == (truth.code or None)
        if truth.status == "success":
            assert job.result == json.loads(truth.data)
    async with database.session() as session:
        beat = await session.get(Heartbeat, "reconcile")
    assert beat is not None
    assert beat.ok
    assert beat.summary is not None
    assert beat.summary.startswith(f"checked {len(rows)} jobs")

    # Idempotent: a second run changes nothing.
    await scheduler.reconcile()
    async with database.session() as session:
        beat = await session.get(Heartbeat, "reconcile")
    assert beat is not None
    assert beat.summary is not None
    assert "checked 0 jobs" in beat.summary


async def test_unknown_job_id_becomes_lost(
    database: Database, vod_settings: Settings, vod: VodClient, clock: FrozenClock
) -> None:
    start = clock()
    unknown = await add_job(database, at=start, job_id="0" * 32)
    clock.advance(timedelta(minutes=11))  # past the grace period, not yet stale
    await Scheduler(
        vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock
    ).reconcile()
    job = await load_job(database, unknown)
    assert job.state == JobState.LOST
    assert job.stale is False


async def test_running_jobs_are_refreshed_and_unlistable_ones_stay_stale(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    fake_vod: FakeVod,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    fake_vod.faults.delay = 60.0
    rows = await submit_recorded(vod, database, clock(), "m1", "AIVideoTag")
    blind = await add_job(database, at=clock(), state=JobState.SUBMIT_UNKNOWN)  # no JobId
    young = await add_job(database, at=clock() + timedelta(hours=1), job_id="f" * 32)
    clock.advance(timedelta(hours=1, minutes=1))
    scheduler = Scheduler(vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock)
    await scheduler.sweep()
    await scheduler.reconcile()

    (id,) = rows.values()
    job = await load_job(database, id)
    assert (job.state, job.stale, job.updated_at) == (JobState.PROCESSING, True, clock())
    assert job.status in ("init", "processing")
    blind_job = await load_job(database, blind)
    assert (blind_job.state, blind_job.stale) == (JobState.SUBMIT_UNKNOWN, True)
    assert (await load_job(database, young)).state == JobState.PROCESSING  # within grace: not asked
    line = next(r.message for r in caplog.records if r.message.startswith("reconcile: checked"))
    assert "1 still running" in line
    assert "1 stale jobs have no JobId" in line


async def test_pending_callbacks_are_confirmed_or_contradicted(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    fake_vod: FakeVod,
    clock: FrozenClock,
) -> None:
    truths: dict[str, int] = {}
    for media, fail in (("m1", 0.0), ("m2", 1.0)):
        fake_vod.faults.fail_rate = fail
        truths |= await submit_recorded(vod, database, clock(), media, "AIVideoTag")
    await fake_vod.idle(10)
    (good, bad) = truths
    assert (fake_vod.jobs[good].status, fake_vod.jobs[bad].status) == ("success", "fail")
    # Both callbacks claim success; confirmation is on, so the webhook only marked them pending.
    async with database.write() as session:
        for job_id in truths:
            session.add(
                new_event(job_id, "success", clock(), applied=False, reason=Applied.PENDING.value)
            )
            outcome = Outcome(job_id=job_id, type="AIVideoTag", status="success", media_id="m")
            assert await mark_pending(session, outcome, clock()) == Applied.PENDING

    unknown = await add_job(database, at=clock(), job_id="0" * 32)  # not pending: not confirm's
    clock.advance(timedelta(minutes=11))  # past the grace period
    scheduler = Scheduler(vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock)
    await scheduler.confirm()
    assert (await load_job(database, unknown)).state == JobState.PROCESSING

    async with database.session() as session:
        jobs = {j.job_id: j for j in await session.scalars(select(Job))}
        events = {e.job_id: e for e in await session.scalars(select(CallbackEvent))}
    assert jobs[good].state == JobState.SUCCEEDED
    assert jobs[bad].state == JobState.FAILED
    assert all(j.pending_status is None for j in jobs.values())
    assert (events[good].applied, events[good].reason) == (True, "confirmed_by_vod")
    assert (events[bad].applied, events[bad].reason) == (False, CONTRADICTED)
    async with database.session() as session:
        beat = await session.get(Heartbeat, "confirm")
    assert beat is not None
    assert beat.summary == (
        "checked 2 jobs: 2 finished, 0 still running, 0 lost, 0 unchanged; "
        "callbacks 1 confirmed, 1 contradicted"
    )
    await scheduler.reconcile()  # the full run covers the rest
    assert (await load_job(database, unknown)).state == JobState.LOST


async def test_only_the_lease_holder_reconciles(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    clock: FrozenClock,
) -> None:
    unknown = await add_job(database, at=clock(), job_id="0" * 32)
    clock.advance(timedelta(minutes=11))
    holder = Scheduler(
        vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock, owner="holder"
    )
    other = Scheduler(
        vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock, owner="other"
    )
    await holder.renew_lease()
    await other.reconcile()
    assert (await load_job(database, unknown)).state == JobState.PROCESSING
    async with database.session() as session:
        assert await session.get(Heartbeat, "reconcile") is None  # skipped runs leave none
    await holder.stop()  # hands the lease over at once
    await other.reconcile()
    assert (await load_job(database, unknown)).state == JobState.LOST


async def test_reconcile_never_holds_a_write_transaction_while_calling_vod(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    fake_vod: FakeVod,
    clock: FrozenClock,
) -> None:
    """While ListAIJob is in flight, another writer gets the (SQLite: only) write lock at once."""
    await add_job(database, at=clock(), job_id="0" * 32)
    clock.advance(timedelta(minutes=11))
    fake_vod.faults.slow_rate, fake_vod.faults.slow_seconds = 1.0, 1.0
    task = asyncio.create_task(
        Scheduler(
            vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock
        ).reconcile()
    )
    await asyncio.sleep(0.4)
    assert not task.done()
    async with asyncio.timeout(0.5), database.write() as session:
        await session.execute(text("UPDATE leases SET owner = owner"))
    await task


# --- issue 13: a callback body is unsigned -------------------------------------------------------


async def test_a_malformed_job_id_never_spoils_a_batch(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    fake_vod: FakeVod,
    clock: FrozenClock,
) -> None:
    """A JobId with commas (stored before the receiver checked ids) made every ListAIJob batch
    it joined hold over ten ids, so VOD refused the batch and its real jobs stayed pending."""
    fake_vod.faults.fail_rate = 0.0
    good: dict[str, int] = {}
    for n in range(9):
        good |= await submit_recorded(vod, database, clock(), f"m{n}", "AIVideoTag")
    poisoned = ",".join("abcdefghijk")
    await add_job(database, poisoned, at=clock())
    await fake_vod.idle(10)
    async with database.write() as session:
        for job_id in [*good, poisoned]:
            session.add(
                new_event(job_id, "success", clock(), applied=False, reason=Applied.PENDING.value)
            )
            outcome = Outcome(job_id=job_id, type="AIVideoTag", status="success", media_id="m")
            assert await mark_pending(session, outcome, clock()) == Applied.PENDING

    await Scheduler(
        vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock
    ).confirm()
    for id in good.values():
        assert (await load_job(database, id)).state == JobState.SUCCEEDED
    async with database.session() as session:
        left = await session.scalar(select(Job).where(Job.job_id == poisoned))
        beat = await session.get(Heartbeat, "confirm")
    assert left is not None
    assert (left.state, left.pending_status) == (JobState.PROCESSING, "success")
    assert beat is not None
    assert beat.summary is not None
    assert beat.summary.startswith("checked 9 jobs: 9 finished")
    assert "1 JobIds are not of VOD's shape" in beat.summary
    assert "VOD errors" not in beat.summary


async def test_a_held_callback_resolves_its_waiting_job_only_once_vod_confirms(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    fake_vod: FakeVod,
    clock: FrozenClock,
) -> None:
    """With confirmation on, a callback whose JobId would resolve a `submit_unknown` job changes
    nothing until ListAIJob confirms that JobId; a forged one never does."""
    fake_vod.faults.fail_rate = 0.0
    (real,) = (await vod.submit_ai_job("m1", ("AIVideoTag",))).jobs  # the answer never came
    waiting = await add_job(database, None, JobState.SUBMIT_UNKNOWN, at=clock(), media_id="m1")
    await fake_vod.idle(10)
    forged = "f" * 32
    async with database.write() as session:
        for job_id in (forged, real.job_id):
            session.add(
                new_event(job_id, "success", clock(), applied=False, reason=Applied.PENDING.value)
            )
            outcome = Outcome(job_id=job_id, type="AIVideoTag", status="success", media_id="m1")
            assert await mark_pending(session, outcome, clock()) == Applied.PENDING
    held = await load_job(database, waiting)
    assert (held.job_id, held.state) == (None, JobState.SUBMIT_UNKNOWN)

    await Scheduler(
        vod_settings, database, vod=VodClients.of(vod_settings, vod), clock=clock
    ).confirm()
    resolved = await load_job(database, waiting)
    assert (resolved.job_id, resolved.state) == (real.job_id, JobState.SUCCEEDED)
    async with database.session() as session:
        assert list(await session.scalars(select(Job.job_id))) == [real.job_id]
        events = {e.job_id: e for e in await session.scalars(select(CallbackEvent))}
    assert (events[real.job_id].applied, events[real.job_id].reason) == (True, "confirmed_by_vod")
    assert (events[forged].applied, events[forged].reason) == (False, CONTRADICTED)


async def test_a_batch_vod_refuses_is_asked_again_id_by_id(
    database: Database, vod_settings: Settings, clock: FrozenClock
) -> None:
    """An id of VOD's shape that VOD still refuses costs one answer, not its batch's: a stub VOD
    on loopback refuses every ListAIJob naming it and knows no other job."""
    bad = "b" * 32
    asked: list[list[str]] = []

    async def list_ai_job(request: web.Request) -> web.Response:
        ids = (await request.post())["JobIds"]
        assert isinstance(ids, str)
        asked.append(ids.split(","))
        if bad in asked[-1]:
            refusal = {"RequestId": "r", "Code": "InvalidParameter", "Message": "JobIds"}
            return web.json_response(refusal, status=400)
        return web.json_response({"RequestId": "r", "NonExistAIJobIds": {"String": asked[-1]}})

    stub = web.Application()
    stub.router.add_post("/", list_ai_job)
    runner = web.AppRunner(stub)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        ids = [f"{n:032x}" for n in range(4)] + [bad] + [f"{n:032x}" for n in range(4, 9)]
        rows = {job_id: await add_job(database, job_id, at=clock()) for job_id in ids}
        clock.advance(timedelta(minutes=11))  # past the grace period
        settings = vod_settings.model_copy(update={"vod_endpoint": f"http://127.0.0.1:{port}"})
        async with VodClient(settings) as stub_vod:
            clients = VodClients.of(settings, stub_vod)
            await Scheduler(settings, database, vod=clients, clock=clock).reconcile()
    finally:
        await runner.cleanup()
    assert asked == [ids, *([job_id] for job_id in ids)]
    for job_id, id in rows.items():
        expected = JobState.PROCESSING if job_id == bad else JobState.LOST
        assert (await load_job(database, id)).state == expected, job_id
    async with database.session() as session:
        beat = await session.get(Heartbeat, "reconcile")
    assert beat is not None
    assert beat.summary is not None
    assert beat.summary.startswith("checked 9 jobs: 0 finished, 0 still running, 9 lost")
    assert "1 JobIds refused by VOD one by one; 2 VOD errors" in beat.summary


def test_the_unconfirmed_index_names_the_pending_reason() -> None:
    assert f"reason = '{Applied.PENDING.value}'" == UNCONFIRMED_SQL
