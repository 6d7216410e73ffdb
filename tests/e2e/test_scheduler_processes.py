"""`tracker scheduler` and `tracker serve` as processes on one database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.factories import add_job, load_job, submit_recorded
from tests.processes import TrackerProcess, free_port
from tracker.db import Database
from tracker.fakevod import FakeVod
from tracker.models import CallbackEvent, Job, JobState, Lease
from tracker.scheduler.leases import RECONCILE_LEASE, lease_holder
from tracker.vod import VodClient

KEY_ID = "test-key-id"
KEY_SECRET = "test-key-secret"
TRUTH = {"success": JobState.SUCCEEDED, "fail": JobState.FAILED}


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
    fake_vod.faults.delay, fake_vod.faults.fail_rate = 3.0, 0.3
    first: dict[str, int] = {}
    for media in ("m1", "m2", "m3"):
        first |= await submit_recorded(vod, database, datetime.now(UTC), media)
    unknown = await add_job(database, at=datetime.now(UTC), job_id="0" * 32)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_scheduler(env, log) for log in logs]
    try:

        async def settled(rows: dict[str, int]) -> bool:
            async with database.session() as session:
                states = dict((await session.execute(select(Job.job_id, Job.state))).all())
            return all(states[j] == TRUTH.get(fake_vod.jobs[j].status) for j in rows)

        async def first_round_done() -> bool:
            return await settled(first) and (await load_job(database, unknown)).state == "lost"

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
        fake_vod.faults.delay = 1.0
        second = await submit_recorded(vod, database, datetime.now(UTC), "m4")

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
        fake_vod.faults.delay, fake_vod.faults.drop_rate, fake_vod.faults.fail_rate = 1.0, 0.2, 0.3
        fake_vod.faults.duplicate_rate, fake_vod.faults.late_rate, fake_vod.faults.late_seconds = (
            0.2,
            0.2,
            0.5,
        )
        rows: dict[str, int] = {}
        for n in range(12):
            rows |= await submit_recorded(vod, database, datetime.now(UTC), f"m{n}")
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
