"""Leases, heartbeats, /readyz and metrics of the scheduled jobs."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database
from tracker.models import Heartbeat
from tracker.scheduler.heartbeats import record_start
from tracker.scheduler.leases import acquire_lease, lease_holder, release_lease
from tracker.scheduler.service import Scheduler
from tracker.scheduler.sweep import flag_stale_jobs


async def sweep(database: Database, settings: Settings, now: datetime) -> int:
    async with database.write() as session:
        return await flag_stale_jobs(session, settings, now)


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
        assert context_of(app).scheduler is not None
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
        assert context_of(off).scheduler is None
