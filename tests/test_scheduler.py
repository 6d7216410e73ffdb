"""The scheduler: stale sweep, reconciliation against the simulator, leases, heartbeats."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from asgi_lifespan import LifespanManager
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import func, insert, select, text

from tests.processes import TrackerProcess, free_port
from tracker.app import create_app
from tracker.cli import main, parse_since
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.db import Database
from tracker.fakevod import FakeVod
from tracker.leases import acquire_lease, lease_holder, release_lease
from tracker.models import CallbackEvent, Heartbeat, Job, JobState, Lease, Origin
from tracker.reconcile import CONTRADICTED
from tracker.scheduler import (
    RECONCILE_LEASE,
    Scheduler,
    flag_stale_jobs,
    record_start,
    replay_events,
    stale_sweep,
)
from tracker.transitions import Applied, Outcome, apply_outcome, mark_pending
from tracker.vod import VodClient

KEY_ID = "test-key-id"
KEY_SECRET = "test-key-secret"
# Indexes whose entries are bounded by the jobs in flight, for the sweep's predicate.
IN_FLIGHT_INDEXES = ("ix_jobs_unflagged", "ix_jobs_stale_state")
TRUTH = {"success": JobState.SUCCEEDED, "fail": JobState.FAILED}


async def add_job(
    database: Database,
    when: datetime,
    *,
    job_id: str | None = None,
    state: JobState = JobState.PROCESSING,
    type: str = "AIVideoTag",
    media_id: str | None = None,
) -> int:
    """A submitted job; each on its own media, as the submitter's unique index requires."""
    async with database.write() as session:
        job = Job(
            job_id=job_id,
            media_id=media_id or f"m-{job_id or uuid4().hex}",
            type=type,
            state=state,
            origin=Origin.SUBMITTED,
            submitted_at=when,
            updated_at=when,
        )
        session.add(job)
        await session.flush()
        return job.id


async def get_job(database: Database, id: int) -> Job:
    async with database.session() as session:
        job = await session.get(Job, id)
    assert job is not None
    return job


async def sweep(database: Database, settings: Settings, now: datetime) -> int:
    async with database.write() as session:
        return await flag_stale_jobs(session, settings, now)


# --- stale sweep ---------------------------------------------------------------------------------


async def test_jobs_past_the_threshold_are_flagged_once(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    start = clock()
    unfinished = [
        await add_job(database, start, job_id=f"j{n}", state=state)
        for n, state in enumerate(
            [JobState.PROCESSING, JobState.SUBMITTING, JobState.SUBMIT_UNKNOWN]
        )
    ]
    done = await add_job(database, start, job_id="done", state=JobState.SUCCEEDED)
    lost = await add_job(database, start, job_id="gone", state=JobState.LOST)
    young = await add_job(database, start + timedelta(minutes=30), job_id="young")

    assert await sweep(database, settings, start + timedelta(minutes=59)) == 0
    flagged_at = start + timedelta(minutes=61)
    assert await sweep(database, settings, flagged_at) == 3
    # Idempotent: a second run (or a second replica) flags nothing again and keeps stale_at.
    assert await sweep(database, settings, flagged_at + timedelta(minutes=5)) == 0
    for id in unfinished:
        job = await get_job(database, id)
        assert (job.stale, job.stale_at) == (True, flagged_at)
    for id in (done, lost, young):
        assert (await get_job(database, id)).stale is False

    # A flagged job that finishes is no longer stale but keeps when it was flagged.
    async with database.write() as session:
        outcome = Outcome(job_id="j0", type="AIVideoTag", status="success", media_id="m1")
        assert await apply_outcome(session, outcome, flagged_at + timedelta(minutes=7))
    job = await get_job(database, unfinished[0])
    assert (job.state, job.stale, job.stale_at) == (JobState.SUCCEEDED, False, flagged_at)
    assert await sweep(database, settings, flagged_at + timedelta(hours=5)) == 1  # "young"


async def test_per_type_thresholds(database: Database, clock: FrozenClock) -> None:
    settings = Settings(
        database_url=str(database.url),
        stale_after=timedelta(hours=1),
        stale_after_aimediadna=timedelta(hours=3),
    )
    start = clock()
    tag = await add_job(database, start, job_id="tag", type="AIVideoTag")
    dna = await add_job(database, start, job_id="dna", type="AIMediaDNA")
    other = await add_job(database, start, job_id="other", type="SomethingElse")

    assert await sweep(database, settings, start + timedelta(hours=2)) == 2
    assert (await get_job(database, tag)).stale
    assert (await get_job(database, other)).stale
    assert not (await get_job(database, dna)).stale
    assert await sweep(database, settings, start + timedelta(hours=3, seconds=1)) == 1
    assert (await get_job(database, dna)).stale


async def test_concurrent_sweeps_flag_each_job_once(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    """Four replicas sweep at the same moment: together they flag each due job exactly once."""
    start = clock() - timedelta(hours=2)
    rows = [
        {
            "job_id": f"j{n}",
            "media_id": f"m{n}",
            "type": "AIVideoTag",
            "state": JobState.PROCESSING,
            "origin": Origin.SUBMITTED,
            "stale": False,
            "submitted_at": start + timedelta(seconds=n),
            "updated_at": start,
        }
        for n in range(2000)
    ]
    async with database.write() as session:
        await session.execute(insert(Job), rows)
    replicas = [Database(str(database.url)) for _ in range(4)]
    try:
        counts = await asyncio.gather(*(sweep(db, settings, clock()) for db in replicas))
    finally:
        for db in replicas:
            await db.dispose()
    assert sum(counts) == len(rows)
    async with database.session() as session:
        flagged = await session.scalar(select(func.count()).where(Job.stale_at == clock()))
    assert flagged == len(rows)


async def explain(database: Database, statement: Any) -> str:
    dialect = database.engine.dialect
    async with database.engine.connect() as conn:
        if database.is_sqlite:
            sql = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
            return "\n".join(str(row[-1]) for row in rows)
        compiled = statement.compile(dialect=dialect)
        params = tuple(compiled.params[name] for name in compiled.positiontup)
        rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", params)
        return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("override", [None, timedelta(hours=3)])
async def test_sweep_reads_the_partial_index(
    database: Database, clock: FrozenClock, override: timedelta | None
) -> None:
    """On a table of mostly finished jobs, with statistics, the sweep reads an index that holds
    only unfinished, unflagged jobs (SQLite: the partial index, whose predicate matches the
    UPDATE's; PostgreSQL may prefer (stale, state) with the same bound), never the whole table.
    benchmarks/sweep.py measures it at 1,000,000 rows."""
    start = clock() - timedelta(days=3)
    rows = [
        {
            "job_id": f"j{n}",
            "media_id": f"m{n}",
            "type": "AIVideoTag" if n % 2 else "AIMediaDNA",
            "state": JobState.SUCCEEDED if n % 50 else JobState.PROCESSING,
            "origin": Origin.SUBMITTED,
            "stale": False,
            "submitted_at": start + timedelta(seconds=n * 60),
            "updated_at": start,
        }
        for n in range(5000)
    ]
    async with database.write() as session:
        await session.execute(insert(Job), rows)
    async with database.engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")
        await conn.commit()
    settings = Settings(database_url=str(database.url), stale_after_aimediadna=override)
    plan = await explain(database, stale_sweep(settings, clock()))
    bounded = ("ix_jobs_unflagged",) if database.is_sqlite else IN_FLIGHT_INDEXES
    assert any(index in plan for index in bounded), plan
    assert "Seq Scan" not in plan
    assert "SCAN jobs" not in plan


# --- leases --------------------------------------------------------------------------------------


async def test_one_lease_holder_until_it_expires(database: Database, clock: FrozenClock) -> None:
    ttl = timedelta(seconds=30)

    async def take(owner: str) -> bool:
        async with database.write() as session:
            return await acquire_lease(session, "reconcile", owner, clock(), ttl)

    assert await take("a")
    assert not await take("b")
    clock.advance(timedelta(seconds=20))
    assert await take("a")  # renewed until now + 30 s
    clock.advance(timedelta(seconds=20))
    assert not await take("b")
    clock.advance(timedelta(seconds=11))  # a stopped renewing: expired
    assert await take("b")
    assert not await take("a")
    async with database.write() as session:
        assert await release_lease(session, "reconcile", "b", clock())
    async with database.session() as session:
        assert await lease_holder(session, "reconcile", clock()) is None
    assert await take("a")


async def test_racing_replicas_take_a_free_lease_once(
    database: Database, clock: FrozenClock
) -> None:
    others = [Database(str(database.url)) for _ in range(4)]
    try:

        async def take(db: Database, owner: str) -> bool:
            async with db.write() as session:
                return await acquire_lease(session, "race", owner, clock(), timedelta(seconds=30))

        won = await asyncio.gather(*(take(db, f"r{n}") for n, db in enumerate(others)))
    finally:
        for db in others:
            await db.dispose()
    assert sum(won) == 1


# --- heartbeats, metrics, /readyz ----------------------------------------------------------------


async def test_heartbeats_show_in_readyz_and_a_stuck_job_shows(
    client: httpx.AsyncClient, app: Any, database: Database, settings: Settings, clock: FrozenClock
) -> None:
    from tracker import metrics

    scheduler = Scheduler(settings, database, vod=None, clock=clock)
    await scheduler.sweep()
    await scheduler.retention()

    body = (await client.get("/readyz")).json()
    jobs = body["scheduler"]["jobs"]
    assert jobs["sweep"]["state"] == "ok"
    assert jobs["sweep"]["summary"].startswith("flagged 0 jobs stale")
    assert jobs["sweep"]["finished_at"] == clock().isoformat()
    assert jobs["reconcile"]["state"] == "off"  # no VOD credentials
    assert body["scheduler"]["status"] == "ok"
    assert body["scheduler"]["in_process"] is False
    last = metrics.SCHEDULER_LAST_RUN.labels("sweep")._value.get()
    assert last == clock().timestamp()

    clock.advance(4 * settings.sweep_interval)
    body = (await client.get("/readyz")).json()
    assert body["scheduler"]["jobs"]["sweep"]["state"] == "late"
    assert body["scheduler"]["status"] == "late"
    assert body["status"] == "ready"  # shown, not gating: the webhook must keep taking traffic

    # A run that started and never finished: stuck once it outlives two intervals.
    async with database.write() as session:
        await record_start(session, "sweep", "other-replica", clock())
    assert (await client.get("/readyz")).json()["scheduler"]["jobs"]["sweep"]["state"] == "running"
    clock.advance(4 * settings.sweep_interval)
    body = (await client.get("/readyz")).json()
    assert body["scheduler"]["jobs"]["sweep"]["state"] == "stuck"
    assert body["scheduler"]["status"] == "stuck"


async def test_failed_run_is_recorded_not_raised(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    scheduler = Scheduler(settings, database, vod=None, clock=clock)

    async def broken() -> str:
        raise RuntimeError("boom")

    await scheduler._run("sweep", broken)
    async with database.session() as session:
        beat = await session.get(Heartbeat, "sweep")
    assert beat is not None
    assert (beat.ok, beat.summary) == (False, "failed: RuntimeError: boom")


async def test_serve_runs_the_scheduler_unless_told_not_to(
    settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The app's lifespan starts APScheduler; its jobs run on their own; stop is clean."""
    caplog.set_level(logging.INFO)
    on = settings.model_copy(update={"scheduler": "on", "sweep_interval": timedelta(seconds=0.1)})
    app = create_app(on)
    async with LifespanManager(app):
        assert app.state.scheduler is not None
        for _ in range(100):
            async with database.session() as session:
                beat = await session.get(Heartbeat, "sweep")
            if (
                beat is not None
                and beat.finished_at is not None
                and beat.finished_at > beat.started_at
            ):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the sweep never ran")
    said = [r for r in caplog.records if r.message.startswith("reconciliation off")]
    assert len(said) == 1

    off = create_app(settings)  # the `settings` fixture is what `serve --no-scheduler` gives
    async with LifespanManager(off):
        assert off.state.scheduler is None


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
                event("a", "success", old, applied=True),
                event("b", "success", old, applied=False, reason="already_final"),
                event("c", "success", old, applied=None),
                event("d", "success", old, applied=False, reason=Applied.PENDING.value),
                event("e", "success", recent, applied=True),
            ]
        )
    await add_job(database, old, job_id="a")
    scheduler = Scheduler(settings, database, vod=None, clock=clock)
    await scheduler.retention()
    await scheduler.retention()  # idempotent
    async with database.session() as session:
        left = set(await session.scalars(select(CallbackEvent.job_id)))
        jobs = list(await session.scalars(select(Job.job_id)))
    assert left == {"c", "d", "e"}
    assert jobs == ["a"]


async def test_replay_applies_unapplied_callbacks_through_the_applier(
    database: Database, clock: FrozenClock
) -> None:
    when = clock() - timedelta(hours=2)
    await add_job(database, when, job_id="fixed")
    await add_job(database, when, job_id="denied")
    async with database.write() as session:
        session.add_all(
            [
                # Stored while a bug made applying fail; the job still waits for it.
                event("fixed", "success", when, applied=False, reason="apply_error: KeyError"),
                event("denied", "success", when, applied=False, reason=CONTRADICTED),
                event("early", "success", when - timedelta(days=9), applied=False, reason="x"),
            ]
        )
    tally = await replay_events(database, clock, since=when - timedelta(days=1), confirm=False)
    assert tally == {"applied": 1}
    async with database.session() as session:
        states = dict((await session.execute(select(Job.job_id, Job.state))).all())
        reasons = dict(
            (await session.execute(select(CallbackEvent.job_id, CallbackEvent.reason))).all()
        )
    assert states == {"fixed": JobState.SUCCEEDED, "denied": JobState.PROCESSING}
    assert reasons["denied"] == CONTRADICTED
    assert reasons["early"] == "x"  # before --since


async def test_events_replay_command(
    database_url: str, database: Database, clock: FrozenClock
) -> None:
    await add_job(database, clock(), job_id="fixed")
    async with database.write() as session:
        session.add(event("fixed", "fail", clock(), applied=False, reason="apply_error: KeyError"))
    env = {"TRACKER_DATABASE_URL": database_url}
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["events", "replay", "--since", "2026-01-01T00:00:00Z"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "replayed 1 callbacks: 1 applied" in result.output
    assert (await get_job(database, 1)).state == JobState.FAILED
    bad = await asyncio.to_thread(
        CliRunner().invoke, main, ["events", "replay", "--since", "soon"], env=env
    )
    assert bad.exit_code == 2
    assert "neither a duration" in bad.output


def test_parse_since() -> None:
    now = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-01-02T03:04:05Z", now) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_since("2026-01-02T03:04:05", now) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- reconciliation against the simulator --------------------------------------------------------


@pytest.fixture
async def fake_vod() -> AsyncIterator[FakeVod]:
    # Every callback dropped: only reconciliation can learn the outcomes.
    fake = FakeVod(
        access_key_id=KEY_ID, access_key_secret=KEY_SECRET, delay=0.2, drop_rate=1.0, seed=7
    )
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def vod_settings(database_url: str, fake_vod: FakeVod) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler="off",
        access_key_id=KEY_ID,
        access_key_secret=SecretStr(KEY_SECRET),
        vod_endpoint=fake_vod.url,
        reconcile_grace=timedelta(minutes=10),
    )


@pytest.fixture
async def vod(vod_settings: Settings) -> AsyncIterator[VodClient]:
    async with VodClient(vod_settings) as client:
        yield client


async def submit(
    vod: VodClient, database: Database, when: datetime, media_id: str, *types: str
) -> dict[str, int]:
    """SubmitAIJob on the simulator, recorded as the submitter would: JobId -> row id."""
    result = await vod.submit_ai_job(media_id, types or ("AIVideoTag", "AIMediaDNA"))
    return {
        job.job_id: await add_job(
            database, when, job_id=job.job_id, type=job.type, media_id=media_id
        )
        for job in result.jobs
    }


async def test_dropped_callbacks_are_found_and_reach_their_true_state(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    fake_vod: FakeVod,
    clock: FrozenClock,
) -> None:
    fake_vod.fail_rate = 0.5
    rows: dict[str, int] = {}
    for media in ("m1", "m2", "m3"):
        rows |= await submit(vod, database, clock(), media)
    await fake_vod.idle(10)
    assert set(fake_vod.dropped) == set(rows)  # no callback reached anyone
    assert {fake_vod.jobs[j].status for j in rows} == {"success", "fail"}

    scheduler = Scheduler(vod_settings, database, vod=vod, clock=clock)
    clock.advance(timedelta(hours=1, minutes=1))
    await scheduler.sweep()
    await scheduler.reconcile()

    for job_id, id in rows.items():
        job = await get_job(database, id)
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
    unknown = await add_job(database, start, job_id="0" * 32)
    clock.advance(timedelta(minutes=11))  # past the grace period, not yet stale
    await Scheduler(vod_settings, database, vod=vod, clock=clock).reconcile()
    job = await get_job(database, unknown)
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
    fake_vod.delay = 60.0
    rows = await submit(vod, database, clock(), "m1", "AIVideoTag")
    blind = await add_job(database, clock(), state=JobState.SUBMIT_UNKNOWN)  # no JobId
    young = await add_job(database, clock() + timedelta(hours=1), job_id="f" * 32)
    clock.advance(timedelta(hours=1, minutes=1))
    scheduler = Scheduler(vod_settings, database, vod=vod, clock=clock)
    await scheduler.sweep()
    await scheduler.reconcile()

    (id,) = rows.values()
    job = await get_job(database, id)
    assert (job.state, job.stale, job.updated_at) == (JobState.PROCESSING, True, clock())
    assert job.status in ("init", "processing")
    blind_job = await get_job(database, blind)
    assert (blind_job.state, blind_job.stale) == (JobState.SUBMIT_UNKNOWN, True)
    assert (await get_job(database, young)).state == JobState.PROCESSING  # within grace: not asked
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
        fake_vod.fail_rate = fail
        truths |= await submit(vod, database, clock(), media, "AIVideoTag")
    await fake_vod.idle(10)
    (good, bad) = truths
    assert (fake_vod.jobs[good].status, fake_vod.jobs[bad].status) == ("success", "fail")
    # Both callbacks claim success; confirmation is on, so the webhook only marked them pending.
    async with database.write() as session:
        for job_id in truths:
            session.add(
                event(job_id, "success", clock(), applied=False, reason=Applied.PENDING.value)
            )
            outcome = Outcome(job_id=job_id, type="AIVideoTag", status="success", media_id="m")
            assert await mark_pending(session, outcome, clock()) == Applied.PENDING

    unknown = await add_job(database, clock(), job_id="0" * 32)  # not pending: not confirm's
    clock.advance(timedelta(minutes=11))  # past the grace period
    scheduler = Scheduler(vod_settings, database, vod=vod, clock=clock)
    await scheduler.confirm()
    assert (await get_job(database, unknown)).state == JobState.PROCESSING

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
    assert (await get_job(database, unknown)).state == JobState.LOST


async def test_only_the_lease_holder_reconciles(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    clock: FrozenClock,
) -> None:
    unknown = await add_job(database, clock(), job_id="0" * 32)
    clock.advance(timedelta(minutes=11))
    holder = Scheduler(vod_settings, database, vod=vod, clock=clock, owner="holder")
    other = Scheduler(vod_settings, database, vod=vod, clock=clock, owner="other")
    await holder.renew_lease()
    await other.reconcile()
    assert (await get_job(database, unknown)).state == JobState.PROCESSING
    async with database.session() as session:
        assert await session.get(Heartbeat, "reconcile") is None  # skipped runs leave none
    await holder.stop()  # hands the lease over at once
    await other.reconcile()
    assert (await get_job(database, unknown)).state == JobState.LOST


async def test_reconcile_never_holds_a_write_transaction_while_calling_vod(
    database: Database,
    vod_settings: Settings,
    vod: VodClient,
    fake_vod: FakeVod,
    clock: FrozenClock,
) -> None:
    """While ListAIJob is in flight, another writer gets the (SQLite: only) write lock at once."""
    await add_job(database, clock(), job_id="0" * 32)
    clock.advance(timedelta(minutes=11))
    fake_vod.slow_rate, fake_vod.slow_seconds = 1.0, 1.0
    task = asyncio.create_task(Scheduler(vod_settings, database, vod=vod, clock=clock).reconcile())
    await asyncio.sleep(0.4)
    assert not task.done()
    async with asyncio.timeout(0.5), database.write() as session:
        await session.execute(text("UPDATE leases SET owner = owner"))
    await task


# --- two `tracker scheduler` processes on one database -------------------------------------------


def start_scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tracker", "scheduler"], env=env, stdout=out, stderr=out
        )


def total(pattern: str, *logs: Path) -> int:
    return sum(int(n) for log in logs for n in re.findall(pattern, log.read_text()))


async def wait_for(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_two_scheduler_processes_share_the_work_and_survive_a_kill(
    database_url: str,
    database: Database,
    vod: VodClient,
    fake_vod: FakeVod,
    tmp_path: Path,
) -> None:
    """Both sweep, each job is flagged once; one holds the lease and reconciles; SIGKILL it and
    the other takes the lease over and reconciles what comes next."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "ALIBABA_"))}
    env |= {
        "TRACKER_DATABASE_URL": database_url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY_SECRET,
        "TRACKER_VOD_ENDPOINT": fake_vod.url,
        "TRACKER_STALE_AFTER": "1s",
        "TRACKER_SWEEP_INTERVAL": "0.2s",
        "TRACKER_RECONCILE_INTERVAL": "0.5s",
        "TRACKER_RECONCILE_GRACE": "1h",  # only stale jobs are looked up
        "TRACKER_LEASE_TTL": "5s",
    }
    fake_vod.delay, fake_vod.fail_rate = 3.0, 0.3
    first: dict[str, int] = {}
    for media in ("m1", "m2", "m3"):
        first |= await submit(vod, database, datetime.now(UTC), media)
    unknown = await add_job(database, datetime.now(UTC), job_id="0" * 32)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_scheduler(env, log) for log in logs]
    try:

        async def settled(rows: dict[str, int]) -> bool:
            async with database.session() as session:
                states = dict((await session.execute(select(Job.job_id, Job.state))).all())
            return all(states[j] == TRUTH.get(fake_vod.jobs[j].status) for j in rows)

        async def first_round_done() -> bool:
            return await settled(first) and (await get_job(database, unknown)).state == "lost"

        await wait_for(first_round_done, 40, "the first jobs to reach their true state")

        async def logged(finished: int) -> bool:  # a run logs its line after its last write
            return total(r"(\d+) finished", *logs) >= finished and all(
                "sweep: flagged" in log.read_text() for log in logs
            )

        await wait_for(lambda: logged(len(first)), 10, "the runs' log lines")
        # Quiet now: nothing stale is left, so no reconciliation is half done when we kill.
        assert total(r"sweep: flagged (\d+) jobs", *logs) == len(first) + 1
        reconcilers = [log for log in logs if "reconcile: checked" in log.read_text()]
        assert len(reconcilers) == 1, "both processes polled VOD while both were alive"
        assert total(r"(\d+) finished", *logs) == len(first)
        assert total(r"(\d+) lost", *logs) == 1
        async with database.session() as session:
            jobs = list(await session.scalars(select(Job)))
            lease = await session.get(Lease, RECONCILE_LEASE)
        assert all(job.stale_at is not None and not job.stale for job in jobs)
        assert lease is not None
        leader = next(p for p in procs if f":{p.pid}:" in lease.owner)
        survivor = next(p for p in procs if p is not leader)

        leader.send_signal(signal.SIGKILL)
        leader.wait(10)
        fake_vod.delay = 1.0
        second = await submit(vod, database, datetime.now(UTC), "m4")

        async def taken_over() -> bool:
            async with database.session() as session:
                holder = await lease_holder(session, RECONCILE_LEASE, datetime.now(UTC))
            return holder is not None and f":{survivor.pid}:" in holder.owner

        await wait_for(taken_over, 15, "the survivor to take the lease")
        await wait_for(lambda: settled(second), 30, "the survivor to reconcile new jobs")
        await wait_for(lambda: logged(len(first) + len(second)), 10, "the survivor's log line")
        survivor_log = logs[procs.index(survivor)].read_text()
        assert "lease: took the reconcile lease" in survivor_log
        assert total(r"(\d+) finished", *logs) == len(first) + len(second)
        assert total(r"sweep: flagged (\d+) jobs", *logs) == len(first) + 1 + len(second)

        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(20) == 0
        async with database.session() as session:  # handed over on a clean stop
            assert await lease_holder(session, RECONCILE_LEASE, datetime.now(UTC)) is None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


async def test_serve_runs_the_scheduler_and_no_scheduler_does_not(
    database_url: str, database: Database
) -> None:
    """`tracker serve` sweeps on its own and says so in /readyz; `--no-scheduler` does not."""
    env = {"TRACKER_DATABASE_URL": database_url, "TRACKER_SWEEP_INTERVAL": "0.2s"}
    web = TrackerProcess("serve", "--no-scheduler", env=env)
    try:
        await asyncio.to_thread(web.wait_ready)
        ready = (await asyncio.to_thread(httpx.get, f"{web.url}/readyz", timeout=5)).json()
        assert ready["scheduler"]["in_process"] is False
        assert ready["scheduler"]["jobs"]["sweep"]["state"] == "never"
        assert ready["scheduler"]["jobs"]["reconcile"]["state"] == "off"
    finally:
        await asyncio.to_thread(web.stop)
    both = TrackerProcess("serve", env=env)
    try:
        await asyncio.to_thread(both.wait_ready)

        async def swept() -> bool:
            reply = await asyncio.to_thread(httpx.get, f"{both.url}/readyz", timeout=5)
            return bool(reply.json()["scheduler"]["jobs"]["sweep"]["state"] == "ok")

        await wait_for(swept, 15, "the in-process sweep")
        assert "reconciliation off: no VOD credentials" in both.log
    finally:
        await asyncio.to_thread(both.stop)


async def test_served_tracker_reaches_every_true_state_despite_dropped_callbacks(
    database_url: str, database: Database, vod: VodClient, fake_vod: FakeVod
) -> None:
    """Fault suite (issue 8): a real `tracker serve` (webhook and scheduler) and a simulator
    that drops a fifth of the callbacks, duplicates and delays others. Delivered callbacks
    wait for VOD's confirmation; dropped ones go stale and are reconciled. Every job ends in
    its true state, every stored callback is settled once."""
    key = "CallbackKey123"
    port = free_port()
    callback_url = f"http://127.0.0.1:{port}/callbacks/vod"
    env = {
        "TRACKER_DATABASE_URL": database_url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY_SECRET,
        "TRACKER_VOD_ENDPOINT": fake_vod.url,
        "TRACKER_CALLBACK_URL": callback_url,
        "TRACKER_CALLBACK_AUTH_KEY": key,
        "TRACKER_STALE_AFTER": "5s",
        "TRACKER_SWEEP_INTERVAL": "0.3s",
        "TRACKER_RECONCILE_INTERVAL": "1s",
        "TRACKER_CONFIRM_INTERVAL": "0.5s",
        "TRACKER_RECONCILE_GRACE": "1h",
    }
    server = TrackerProcess("serve", env=env, port=port)
    try:
        await asyncio.to_thread(server.wait_ready)
        fake_vod.callback_url, fake_vod.auth_key = callback_url, key
        fake_vod.delay, fake_vod.drop_rate, fake_vod.fail_rate = 1.0, 0.2, 0.3
        fake_vod.duplicate_rate, fake_vod.late_rate, fake_vod.late_seconds = 0.2, 0.2, 0.5
        rows: dict[str, int] = {}
        for n in range(12):
            rows |= await submit(vod, database, datetime.now(UTC), f"m{n}")
        await fake_vod.idle(20)
        dropped = set(fake_vod.dropped) & set(rows)
        assert dropped, "the seeded simulator dropped no callback: the test proves nothing"
        assert set(rows) - dropped, "every callback was dropped"

        async def all_true() -> bool:
            async with database.session() as session:
                jobs = {j.job_id: j for j in await session.scalars(select(Job))}
            return all(
                jobs[j].state == TRUTH[fake_vod.jobs[j].status] and jobs[j].pending_status is None
                for j in rows
            )

        await wait_for(all_true, 40, "every job to reach its true state")
        async with database.session() as session:
            jobs = {j.job_id: j for j in await session.scalars(select(Job))}
            events = list(await session.scalars(select(CallbackEvent)))
        for job_id in dropped:  # found by the sweep, settled by reconciliation
            assert jobs[job_id].stale_at is not None
            assert not jobs[job_id].stale
        assert {e.job_id for e in events} == set(rows) - dropped
        # Settled once: confirmed by VOD, or (when the applier waits out a burst, as it does on
        # SQLite) found already final because reconciliation applied VOD's answer first.
        settled = {(e.applied, e.reason) for e in events}
        assert settled <= {(True, "confirmed_by_vod"), (False, "already_final")}, settled
    finally:
        await asyncio.to_thread(server.stop)
