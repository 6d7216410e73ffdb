"""The fault suite: real `tracker serve` processes, real HTTP on loopback, the simulator's truth.

Each test drives jobs through the real submit path (`POST /jobs`) against the in-process VOD
simulator, injects one kind of fault, and compares the tracker's database with `FakeVod.jobs`.
PostgreSQL-only faults (stopping the database, two replicas) run in the PostgreSQL pass, where
TRACKER_TEST_DATABASE_URL is set. Bad input (fuzzers) is covered elsewhere: see the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests import programs
from tests.conftest import POSTGRES_URL
from tests.processes import TrackerProcess, free_port
from tracker.db import Database, upgrade
from tracker.fakevod import FakeVod, Faults
from tracker.models import CallbackEvent, Job
from tracker.vod import sign_callback

ACCESS_KEY_ID = "LTAIfaults8"
ACCESS_KEY_SECRET = "faults-secret-8"
AUTH_KEY = "Faults8Key"  # VOD AuthKeys mix upper case, lower case and digits
TOKEN = "faults-token"
TYPES = ["AIVideoTag", "AIMediaDNA"]
TRUE_STATE = {"success": "succeeded", "fail": "failed"}
ROOT = Path(__file__).resolve().parents[2]


def scale(media: int) -> pytest.MarkDecorator:
    """Each fault at a size that fits the default suite, and 10 times larger behind -m slow."""
    return pytest.mark.parametrize(
        "media", [media, pytest.param(10 * media, marks=pytest.mark.slow)]
    )


postgres_only = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="PostgreSQL-only fault: runs in the PostgreSQL pass (TRACKER_TEST_DATABASE_URL set)",
)


# --- processes, simulator, HTTP -----------------------------------------------------------------


def serve_env(database_url: str, port: int, vod_url: str, **settings: str) -> dict[str, str]:
    """Environment of one `tracker serve`: signed callbacks, API token, the simulator as VOD.

    Callbacks apply directly (no ListAIJob confirmation) unless a test says otherwise, so that
    each outcome applied is visible as one applied inbox row; the scheduler is slow unless asked.
    """
    env = {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_CALLBACK_URL": f"http://127.0.0.1:{port}/callbacks/vod",
        "TRACKER_CALLBACK_AUTH_KEY": AUTH_KEY,
        "TRACKER_API_TOKENS": TOKEN,
        "TRACKER_VOD_ENDPOINT": vod_url,
        "TRACKER_VOD_RATE_LIMIT": "1000",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "TRACKER_CALLBACK_CONFIRM": "off",
        "TRACKER_SWEEP_INTERVAL": "1h",
        "TRACKER_RECONCILE_INTERVAL": "1h",
    }
    env.update({f"TRACKER_{name.upper()}": value for name, value in settings.items()})
    return env


@pytest.fixture
def spawn() -> Iterator[Callable[..., TrackerProcess]]:
    """Start `tracker ...` processes; every one is stopped (or killed) at the end, whatever."""
    started: list[TrackerProcess] = []

    def start(*args: str, env: dict[str, str], port: int | None = None) -> TrackerProcess:
        process = TrackerProcess(*args, env=env, port=port)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(timeout=10)


@pytest.fixture
async def make_fake() -> AsyncIterator[Callable[..., Awaitable[FakeVod]]]:
    fakes: list[FakeVod] = []

    async def make(**options: Any) -> FakeVod:
        fake = FakeVod(access_key_id=ACCESS_KEY_ID, access_key_secret=ACCESS_KEY_SECRET, **options)
        fakes.append(fake)
        await fake.start()
        return fake

    yield make
    for fake in fakes:
        await fake.stop()


async def ready(process: TrackerProcess, seconds: float = 30) -> None:
    """Wait (without blocking the simulator's loop) until the process answers /readyz."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if process.process.poll() is not None:
                raise AssertionError(f"tracker exited early:\n{process.log}")
            try:
                if (await http.get(f"{process.url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{process.url} not ready in {seconds}s:\n{process.log}")


async def submit(urls: list[str], media_ids: list[str], concurrency: int = 8) -> list[str]:
    """POST /jobs for each media (both types), spread over `urls`; the JobIds VOD returned."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def one(http: httpx.AsyncClient, url: str, media_id: str) -> list[str]:
        async with gate:
            response = await http.post(
                f"{url}/jobs", json={"media_id": media_id, "types": TYPES}, headers=headers
            )
        assert response.status_code == 201, response.text
        return [job["job_id"] for job in response.json()["jobs"]]

    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(
            *(one(http, urls[n % len(urls)], media) for n, media in enumerate(media_ids))
        )
    return [job_id for ids in answers for job_id in ids]


def signed(url: str) -> dict[str, str]:
    stamp = int(time.time())
    return {
        "Content-Type": "application/json",
        "X-VOD-TIMESTAMP": str(stamp),
        "X-VOD-SIGNATURE": sign_callback(url, stamp, AUTH_KEY),
    }


# --- the tracker's database against the simulator's truth -------------------------------------


async def read_db(database_url: str) -> tuple[dict[str, Job], list[CallbackEvent]]:
    database = Database(database_url)
    try:
        async with database.session() as session:
            jobs = {job.job_id: job for job in await session.scalars(select(Job)) if job.job_id}
            events = list(await session.scalars(select(CallbackEvent)))
    finally:
        await database.dispose()
    return jobs, events


def differences(fake: FakeVod, jobs: dict[str, Job]) -> list[str]:
    """Every submitted simulator job must be final and in the same final state in the tracker."""
    wrong = []
    for truth in fake.jobs.values():
        job = jobs.get(truth.job_id)
        if truth.status not in TRUE_STATE:
            wrong.append(f"{truth.job_id}: still {truth.status} in the simulator")
        elif job is None:
            wrong.append(f"{truth.job_id}: not in the tracker")
        elif job.state != TRUE_STATE[truth.status]:
            wrong.append(f"{truth.job_id}: {job.state} in the tracker, {truth.status} at VOD")
    return wrong


async def until_true(fake: FakeVod, database_url: str, seconds: float) -> dict[str, Job]:
    """Wait until the tracker matches the truth and has applied every stored callback."""
    deadline = time.monotonic() + seconds
    while True:
        jobs, events = await read_db(database_url)
        wrong = differences(fake, jobs) + [
            f"event {e.id} not applied yet" for e in events if e.applied is None
        ]
        if not wrong:
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {seconds}s: {wrong[:5]} ({len(wrong)} in all)")
        await asyncio.sleep(0.3)


def applied_once(events: list[CallbackEvent]) -> int:
    """One inbox row per job (repeated deliveries collapse on the dedup key), applied at most
    once: either it changed the job, or the job was already final (reconciliation was first).
    Returns how many outcomes the callbacks applied."""
    per_job = Counter(e.job_id for e in events)
    assert [job_id for job_id, n in per_job.items() if n > 1] == []
    verdicts = {(e.applied, e.reason) for e in events}
    # A callback may beat the submitter's own record of VOD's answer (a loaded machine, a quick
    # simulator): it then gives the waiting row its JobId, which is applying it once too.
    once = {(True, "applied"), (True, "resolved_submit_unknown"), (False, "already_final")}
    assert verdicts <= once, verdicts
    return sum(1 for e in events if e.applied)


def log_counts(log: str, pattern: str) -> int:
    return sum(int(n) for n in re.findall(pattern, log))


@contextlib.asynccontextmanager
async def write_lock(database_url: str) -> AsyncIterator[None]:
    """Hold the inbox's write lock from another connection: the tracker's commits wait."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        async with aiosqlite.connect(str(url.database), timeout=10) as conn:
            await conn.execute("BEGIN IMMEDIATE")
            yield
            await conn.rollback()
        return
    conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE callback_events IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


# --- kill -9 in the middle of a burst -----------------------------------------------------------


@scale(40)
async def test_kill_9_mid_burst_loses_and_doubles_no_acknowledged_callback(
    media: int, database_url: str, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    # No callback URL: the test delivers the events itself.
    fake = await make_fake(seed=81, faults=Faults(delay=0.2, fail_rate=0.3))
    port = free_port()
    env = serve_env(database_url, port, fake.url)
    server = spawn("serve", "--no-scheduler", env=env, port=port)
    await ready(server)
    await submit([server.url], [f"kill-{n}" for n in range(media)])
    await fake.idle(10)
    assert len(fake.jobs) == 2 * media

    # Every event 4 times (VOD's most), shuffled, 128 at a time. Once 30 are acknowledged, the
    # database stalls (another connection holds the inbox's write lock), requests pile up
    # waiting for their commit, and the server is killed then: a 200 before its commit is lost.
    url = f"{server.url}/callbacks/vod"
    bodies = [json.dumps(job.event()) for job in fake.jobs.values()] * 4
    random.Random(8).shuffle(bodies)
    acked: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(128)
    enough = asyncio.Event()

    async def deliver(http: httpx.AsyncClient, body: str) -> None:
        async with gate:
            try:
                response = await http.post(url, content=body, headers=signed(url))
            except httpx.TransportError:
                return
        statuses[response.status_code] += 1
        if response.status_code == 200:
            acked[body] += 1
            if sum(acked.values()) >= 30:
                enough.set()

    async def stall_and_kill() -> None:
        await enough.wait()
        async with write_lock(database_url):
            await asyncio.sleep(0.5)
            server.kill()

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=128)) as http:
        killer = asyncio.create_task(stall_and_kill())
        await asyncio.gather(*(deliver(http, body) for body in bodies))
        await asyncio.wait_for(killer, 10)
    assert set(statuses) == {200}  # only 200s before the kill: no 5xx, no early 503
    unacked = [body for body in set(bodies) if not acked[body]]
    assert unacked, "the kill came too late to interrupt the burst"

    server = spawn("serve", "--no-scheduler", env=env, port=port)
    await ready(server)
    deadline = time.monotonic() + 20
    while any(e.applied is None for e in (await read_db(database_url))[1]):
        assert time.monotonic() < deadline, "stored callbacks not applied after the restart"
        await asyncio.sleep(0.2)

    jobs, events = await read_db(database_url)
    stored = {e.job_id: e for e in events}
    for body, count in acked.items():
        event = json.loads(body)
        row = stored.get(event["JobId"])
        assert row is not None, f"acknowledged callback for {event['JobId']} lost"
        assert (row.applied, row.reason) == (True, "applied")
        assert row.deliveries >= count  # every acknowledged delivery was committed
        assert jobs[event["JobId"]].state == TRUE_STATE[event["Status"]]
    assert applied_once(events) == len(events)  # no scheduler: only callbacks apply

    # VOD retries what it never got a 200 for; then every job is true, each applied once.
    async with httpx.AsyncClient(timeout=10) as http:
        for body in unacked:
            response = await http.post(url, content=body, headers=signed(url))
            assert response.status_code == 200, response.text
    await until_true(fake, database_url, 20)
    assert applied_once((await read_db(database_url))[1]) == len(fake.jobs)


# --- a simulator that drops 20% of callbacks ----------------------------------------------------


@scale(30)
async def test_reconciliation_recovers_the_twenty_percent_of_callbacks_dropped(
    media: int, database_url: str, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/callbacks/vod"
    fake = await make_fake(
        callback_url=url,
        auth_key=AUTH_KEY,
        seed=20,
        faults=Faults(delay=0.5, drop_rate=0.2, fail_rate=0.25),
    )
    env = serve_env(database_url, port, fake.url, reconcile_interval="1s", reconcile_grace="1s")
    server = spawn("serve", env=env, port=port)
    await ready(server)
    await submit([server.url], [f"drop-{n}" for n in range(media)])
    await fake.idle(15)
    dropped = set(fake.dropped)
    assert 0.1 <= len(dropped) / len(fake.jobs) <= 0.3  # about 20% (seeded)

    jobs = await until_true(fake, database_url, 20)
    _, events = await read_db(database_url)
    assert {e.job_id for e in events} == set(fake.jobs) - dropped  # never sent, never stored
    assert all(jobs[job_id].status == fake.jobs[job_id].status for job_id in dropped)
    # Each outcome applied once, by its callback or by reconciliation (every dropped one).
    by_reconcile = log_counts(server.log, r"reconcile: checked \d+ jobs: (\d+) finished")
    assert by_reconcile >= len(dropped)
    assert applied_once(events) + by_reconcile == len(fake.jobs)


# --- PostgreSQL: two replicas, and the database going away ----------------------------------


async def sibling_database(url: str, suffix: str) -> str:
    """A database next to the test database (`<name>_<suffix>`), emptied and migrated."""
    parsed = make_url(url)
    name = f"{parsed.database}_{suffix}"
    admin = create_async_engine(parsed, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        exists = await conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        )
        if not exists:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    sibling = parsed.set(database=name).render_as_string(hide_password=False)
    engine = create_async_engine(sibling)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()
    await asyncio.to_thread(upgrade, sibling)
    return sibling


@postgres_only
@scale(16)
async def test_two_replicas_with_duplicates_and_late_callbacks_apply_each_outcome_once(
    media: int, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    assert POSTGRES_URL is not None
    database_url = await sibling_database(POSTGRES_URL, "replicas")
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}/callbacks/vod" for port in ports]
    # The simulator alternates between the replicas on every attempt (no load balancer).
    fake = await make_fake(
        callback_url=urls[0],
        extra_callback_urls=urls[1:],
        auth_key=AUTH_KEY,
        seed=2,
        faults=Faults(
            delay=0.5,
            fail_rate=0.3,
            duplicate_rate=0.4,
            late_rate=0.3,
            late_seconds=3.0,
            stuck_seconds=2.5,
        ),
    )
    fake.faults.stuck_next = 3
    replicas = [
        spawn(
            "serve",
            env=serve_env(
                database_url,
                port,
                fake.url,
                sweep_interval="0.5s",
                stale_after="1.5s",
                reconcile_interval="1s",
                reconcile_grace="1s",
            ),
            port=port,
        )
        for port in ports
    ]
    for replica in replicas:
        await ready(replica)
    await submit([replica.url for replica in replicas], [f"rep-{n}" for n in range(media)])
    await fake.idle(20)
    jobs = await until_true(fake, database_url, 20)
    _, events = await read_db(database_url)

    stuck = {job.job_id for job in fake.jobs.values() if job.stuck}
    assert len(stuck) == 3
    assert all(jobs[job_id].stale_at is not None for job_id in stuck)
    assert not any(job.stale for job in jobs.values())  # finished jobs are no longer stale
    duplicated = [job for job in fake.jobs.values() if job.acknowledged > 1]
    assert duplicated, "no duplicate was delivered"
    assert {d.url for d in fake.deliveries} == set(urls)

    logs = "".join(replica.log for replica in replicas)
    # Each stale job flagged once: the replicas' sweeps together flagged exactly the jobs that
    # carry a stale_at (a second flagging of the same job would count twice).
    flagged = log_counts(logs, r"sweep: flagged (\d+) jobs stale")
    assert flagged == sum(job.stale_at is not None for job in jobs.values())
    # Each outcome applied once: by one replica's callback applier (one applied inbox row) or
    # by reconciliation (the lease holder), never both, never twice.
    by_callback = applied_once(events)
    by_reconcile = log_counts(logs, r"reconcile: checked \d+ jobs: (\d+) finished")
    assert by_callback + by_reconcile == len(fake.jobs)
    # Out of order: late callbacks arrived after reconciliation had applied VOD's answer.
    assert [e for e in events if e.reason == "already_final"], "no late delivery happened"


class Cluster:
    """A throwaway PostgreSQL cluster of this test's own (`.ci/postgres`), stoppable in place."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = ""

    def _pg_ctl(self, *args: str) -> None:
        command = [
            str(programs.postgres_bindir() / "pg_ctl"),
            "-D",
            str(self.directory / "data"),
            *args,
        ]
        if os.geteuid() == 0:  # the server refuses to run as root, like .ci/postgres
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        done = subprocess.run(
            [str(ROOT / ".ci" / "postgres"), "start", str(self.directory), str(self.port)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.url = done.stdout.strip().splitlines()[-1]

    async def stop_server(self) -> None:
        await asyncio.to_thread(self._pg_ctl, "-m", "fast", "-w", "stop")

    async def start_server(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} "
            "-c fsync=on -c max_connections=300"
        )
        log = str(self.directory / "log")
        await asyncio.to_thread(self._pg_ctl, "-l", log, "-w", "start", "-o", options)

    def remove(self) -> None:
        subprocess.run(
            [str(ROOT / ".ci" / "postgres"), "stop", str(self.directory)],
            capture_output=True,
            timeout=60,
        )


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    programs.postgres_bindir()
    # PostgreSQL cannot be told to pick a free port and say which, so it is given one the OS
    # just handed out; if another program takes it first, the start fails and a new port is
    # tried (never a fixed port or range: another run on the machine may hold it).
    for attempt in range(1, 6):
        # Directly under the temp root: the `postgres` user must be able to reach it.
        directory = Path(tempfile.gettempdir()) / f"tracker-faults-pg-{uuid.uuid4().hex[:8]}"
        own = Cluster(directory, free_port())
        try:
            own.start()
        except subprocess.CalledProcessError:
            own.remove()
            if attempt == 5:
                raise
            continue
        try:
            yield own
        finally:
            own.remove()
        return


@postgres_only
@scale(20)
async def test_postgres_stopping_mid_burst_answers_503_and_recovers_without_restart(
    media: int, cluster: Cluster, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    await asyncio.to_thread(upgrade, cluster.url)
    port = free_port()
    url = f"http://127.0.0.1:{port}/callbacks/vod"
    # VOD retries 2-3 times 1 s apart (vod-reference.md 6.5); the simulator here keeps trying
    # for 10 s so the outage may last a few seconds on a slow, shared machine.
    fake = await make_fake(
        callback_url=url,
        auth_key=AUTH_KEY,
        seed=5,
        faults=Faults(delay=1.5, fail_rate=0.3, callback_attempts=10),
    )
    # No scheduler: only callbacks can finish a job, so the simulator's retries have to land.
    server = spawn("serve", "--no-scheduler", env=serve_env(cluster.url, port, fake.url), port=port)
    await ready(server)
    await submit([server.url], [f"pg-{n}" for n in range(media)])

    # A steady burst beside the simulator's events, 16 at a time, from before the database
    # stops until after it returns: upload events, each distinct, stored but never applied, so
    # they cannot finish a job in the simulator's place.
    answers: list[tuple[str, int]] = []
    hammering = True

    async def hammer(http: httpx.AsyncClient) -> None:
        while hammering:
            body = json.dumps({"EventType": "FileUploadComplete", "VideoId": uuid.uuid4().hex})
            response = await http.post(url, content=body, headers=signed(url))
            answers.append((body, response.status_code))

    async def until(what: str, check: Callable[[], bool], seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    def count(status: int) -> int:
        return sum(1 for _, code in answers if code == status)

    async with httpx.AsyncClient(timeout=10) as http:
        burst = [asyncio.create_task(hammer(http)) for _ in range(16)]
        await until("the burst to be stored", lambda: count(200) >= 20)
        await cluster.stop_server()
        readyz = await http.get(f"{server.url}/readyz")
        assert readyz.status_code == 503
        assert readyz.json()["reason"].startswith("database unreachable")
        await until(
            "the simulator's events to meet the outage",
            lambda: all(job.final and job.attempts for job in fake.jobs.values()),
        )
        stored_before = count(200)
        await until("503s for the burst", lambda: count(503) >= 50)
        assert server.process.poll() is None

        await cluster.start_server()
        await until("200s again", lambda: count(200) >= stored_before + 20)
        hammering = False
        await asyncio.gather(*burst)
        assert (await http.get(f"{server.url}/readyz")).status_code == 200

    assert {code for _, code in answers} == {200, 503}  # never a 500, never a hang
    await fake.idle(20)
    await until_true(fake, cluster.url, 20)
    statuses = Counter(d.status for d in fake.deliveries)
    assert statuses[503] > 0, "no delivery of the simulator met the outage"
    assert set(statuses) <= {200, 503}, statuses
    assert all(job.acknowledged >= 1 for job in fake.jobs.values())  # the retries landed
    assert not fake.dropped
    _, events = await read_db(cluster.url)
    ai_events = [e for e in events if e.job_id is not None]
    assert applied_once(ai_events) == len(fake.jobs)
    # Every burst event that got a 200 is stored, whichever side of the outage it fell on.
    stored = {e.body for e in events if e.event_type == "FileUploadComplete"}
    assert {body for body, code in answers if code == 200} <= stored
    assert server.process.poll() is None  # recovered without a restart


# --- bad input ----------------------------------------------------------------------------------
# The fuzzers live with the endpoints they cover and are not repeated here:
# - tests/ingest/test_receiver.py::test_fuzzed_bodies_never_fail_the_server_nor_change_a_job:
#   hypothesis, 200 malformed bodies at POST /callbacks/vod: never a 500, never a changed job.
# - tests/test_openapi.py::test_api_conforms_to_its_openapi_document: schemathesis over every
#   operation of /openapi.json on a live server (status API, POST /jobs, POST /callbacks/vod;
#   with the token and without): no 500, every response as documented.
