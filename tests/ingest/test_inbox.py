"""The inbox: group commit, dedup keys, the applier, outages, and the wire with a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select, text
from starlette.applications import Starlette

from tests import programs
from tests.ingest.test_receiver import DNA_EVENT, KEY, TAG_EVENT, URL, add_job, events, job, settle
from tests.processes import TrackerProcess, free_port
from tracker.app import create_app
from tracker.clock import FrozenClock, utcnow
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database, upgrade
from tracker.fakevod import FakeVod, Faults
from tracker.ingest import inbox as inbox_module
from tracker.ingest.applier import apply_pending
from tracker.ingest.events import parse_callback, parse_event_time
from tracker.ingest.inbox import Inbox, StoreFailed
from tracker.ingest.pending import EVENTS
from tracker.models import CallbackEvent, Job, JobState
from tracker.vod import VodClient, sign_callback

ROOT = Path(__file__).resolve().parents[2]


def row_for(body: dict[str, Any] | bytes, when: datetime) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    row, _ = parse_callback(raw)
    return {**row, "received_at": when, "headers": {}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2017-03-20T07:49:17Z", datetime(2017, 3, 20, 7, 49, 17, tzinfo=UTC)),
        ("2017-03-20T07:49:17:025Z", datetime(2017, 3, 20, 7, 49, 17, 25000, tzinfo=UTC)),
        ("2017-03-20T07:49:17.025Z", datetime(2017, 3, 20, 7, 49, 17, 25000, tzinfo=UTC)),
        ("2017-03-20T15:49:17+08:00", datetime(2017, 3, 20, 7, 49, 17, tzinfo=UTC)),
        ("2017-03-20T07:49:17", datetime(2017, 3, 20, 7, 49, 17, tzinfo=UTC)),
        ("0001-01-01T00:00:00+05:00", None),
        ("2017-13-45T07:49:17Z", None),
        ("yesterday", None),
        (12345, None),
    ],
)
def test_event_times_are_parsed_leniently(value: object, expected: datetime | None) -> None:
    assert parse_event_time(value) == expected


def test_redeliveries_share_a_dedup_key_and_different_events_do_not() -> None:
    key = parse_callback(json.dumps(TAG_EVENT).encode())[0]["dedup_key"]
    reordered = json.dumps(dict(reversed(TAG_EVENT.items())), indent=2).encode()
    assert parse_callback(reordered)[0]["dedup_key"] == key
    for change in ({"Status": "fail"}, {"JobId": "other"}, {"EventTime": "2017-03-20T07:49:18Z"}):
        assert parse_callback(json.dumps({**TAG_EVENT, **change}).encode())[0]["dedup_key"] != key
    # Other events and junk: the normalised body, or the bytes.
    upload = {"EventType": "FileUploadComplete", "VideoId": "v", "Size": 1}
    first = parse_callback(json.dumps(upload).encode())[0]["dedup_key"]
    assert parse_callback(json.dumps(dict(reversed(upload.items()))).encode())[0]["dedup_key"] == (
        first
    )
    assert parse_callback(b"junk")[0]["dedup_key"] != parse_callback(b"junk!")[0]["dedup_key"]


def test_dedup_keys_sort_by_event_time() -> None:
    """New events' keys go to the end of the unique index, not to a random page of it."""
    start = datetime(2026, 12, 1, 23, 59, 30, tzinfo=UTC)
    times = [start + timedelta(seconds=7 * n) for n in range(12)]
    bodies = [
        {**TAG_EVENT, "JobId": f"job{n}", "EventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
        for n, at in enumerate(times)
    ]
    keys = [parse_callback(json.dumps(body).encode())[0]["dedup_key"] for body in bodies]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert {len(key) for key in keys} == {64}
    # No readable time: the hash alone, still one key per event.
    timeless = {**TAG_EVENT, "EventTime": "yesterday"}
    assert len(parse_callback(json.dumps(timeless).encode())[0]["dedup_key"]) == 64


async def test_a_steady_stream_is_applied(database: Database) -> None:
    """Recording comes first during a burst, but a stream that never pauses must not starve the
    applier: events are applied while they keep arriving, in short turns (applier.BUSY_BATCH)."""
    inbox = Inbox(database, clock=utcnow)
    await inbox.start()

    async def applied() -> int:
        async with database.session() as session:
            count = await session.scalar(
                select(func.count()).select_from(EVENTS).where(EVENTS.c.applied.is_not(None))
            )
        return count or 0

    try:
        for n in range(150):  # a commit every ~10 ms: recording never idle for long
            await inbox.record(row_for({**TAG_EVENT, "JobId": f"steady{n}"}, utcnow()))
            await asyncio.sleep(0.01)
        during = await applied()
        for _ in range(200):  # bounded: at most ~10 s
            if await applied() == 150:
                break
            await asyncio.sleep(0.05)
        after = await applied()
    finally:
        await inbox.stop()
    assert after == 150
    assert during >= 50, f"only {during} of 150 applied while the stream lasted"


async def test_concurrent_events_are_committed_in_groups(database: Database) -> None:
    inbox = Inbox(database, clock=utcnow)
    await inbox.start()
    try:
        now = utcnow()
        rows = [row_for({**TAG_EVENT, "JobId": f"job-{i}"}, now) for i in range(300)]
        rows += [row_for(TAG_EVENT, now)] * 3  # the same event three times in one burst
        results = await asyncio.gather(*(inbox.record(row) for row in rows))
    finally:
        await inbox.stop()
    assert sum(result.new for result in results) == 301
    assert inbox.batches < len(rows) / 4  # grouped, not one commit per event
    stored = await events(database)
    assert len(stored) == 301
    (repeated,) = [e for e in stored if e.job_id == TAG_EVENT["JobId"]]
    assert repeated.deliveries == 3
    assert all(e.received_at == now and e.headers == {} for e in stored)


async def test_an_unreachable_database_fails_the_batch() -> None:
    # A port this test holds bound but never listens on: a refused connection, at once, and no
    # other program can take the port meanwhile (a fixed port could be anyone's).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        await _refused(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing")


async def _refused(url: str) -> None:
    database = Database(url)
    inbox = Inbox(database, clock=utcnow)
    await inbox.start()
    try:
        with pytest.raises(StoreFailed):
            await inbox.record(row_for(TAG_EVENT, utcnow()))
    finally:
        await inbox.stop()
        await database.dispose()
    with pytest.raises(StoreFailed):
        await inbox.record(row_for(TAG_EVENT, utcnow()))  # closed


async def test_events_stored_before_a_crash_are_applied_on_start(
    database: Database, settings: Settings, clock: FrozenClock
) -> None:
    await add_job(database, TAG_EVENT["JobId"])
    async with database.write() as session:
        row = row_for(TAG_EVENT, clock.now)
        await session.execute(EVENTS.insert().values(row))
    app = create_app(settings, clock=clock)
    async with contextlib.AsyncExitStack() as stack:
        from asgi_lifespan import LifespanManager

        await stack.enter_async_context(LifespanManager(app))
        await settle(database)
    assert (await job(database, TAG_EVENT["JobId"])).state == JobState.SUCCEEDED


async def test_an_event_that_cannot_be_applied_is_set_aside(
    database: Database, clock: FrozenClock
) -> None:
    await add_job(database, DNA_EVENT["JobId"], type="AIMediaDNA")
    async with database.write() as session:
        broken = row_for({**TAG_EVENT, "JobId": "broken"}, clock.now)
        broken["body"] = "{truncated"  # cannot be re-read by the applier
        await session.execute(EVENTS.insert().values(broken))
        await session.execute(EVENTS.insert().values(row_for(DNA_EVENT, clock.now)))
    assert await apply_pending(database, clock.now) == 2
    first, second = await events(database)
    assert (first.applied, first.reason) == (False, "apply_error: JSONDecodeError")
    assert (second.applied, second.reason) == (True, "applied")
    assert await apply_pending(database, clock.now) == 0


async def test_a_locked_database_answers_503_then_recovers(
    tmp_path: Path, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's write lock held by another process; PostgreSQL outages: see below.
    path = tmp_path / "locked.db"
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{path}")
    monkeypatch.setattr(inbox_module, "STORE_TIMEOUT", 0.5)
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{path}", callback_url=URL, callback_auth_key=KEY
    )
    app = create_app(settings, clock=clock)
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            response = await http.post(
                "/callbacks/vod", json=TAG_EVENT, headers=signed_headers(clock)
            )
            assert (response.status_code, response.json()["error"]) == (503, "unavailable")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # VOD retries a second later: stored once, whether or not the first attempt got in.
        response = await http.post("/callbacks/vod", json=TAG_EVENT, headers=signed_headers(clock))
        assert response.status_code == 200
        (event,) = await events(context_of(app).database)
        assert event.job_id == TAG_EVENT["JobId"]


# -- a real server on loopback ------------------------------------------------------------------


def signed_headers(clock: FrozenClock) -> dict[str, str]:
    timestamp = int(clock.now.timestamp())
    return {
        "X-VOD-TIMESTAMP": str(timestamp),
        "X-VOD-SIGNATURE": sign_callback(URL, timestamp, KEY),
    }


@contextlib.asynccontextmanager
async def serving(app: Starlette, port: int = 0) -> AsyncIterator[str]:
    """Run `app` under uvicorn on a loopback port for the duration of the block."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn restores signal handlers on exit; inside pytest it must not install its own.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def signed_app(
    database_url: str, clock: FrozenClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Database, str]]:
    settings = Settings(database_url=database_url, callback_url=URL, callback_auth_key=KEY)
    app = create_app(settings, clock=clock)
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        yield http, context_of(app).database, database_url


async def test_concurrent_duplicates_on_the_wire_apply_once(
    signed_app: tuple[httpx.AsyncClient, Database, str], clock: FrozenClock
) -> None:
    http, database, _ = signed_app
    await add_job(database, TAG_EVENT["JobId"])
    body = json.dumps(TAG_EVENT)
    for _ in range(3):  # two deliveries in the same instant, a few times over
        pair = await asyncio.gather(
            *(
                http.post("/callbacks/vod", content=body, headers=signed_headers(clock))
                for _ in range(2)
            )
        )
        assert [r.status_code for r in pair] == [200, 200]
    await settle(database)
    (event,) = await events(database)
    assert (event.deliveries, event.applied, event.reason) == (6, True, "applied")
    assert (await job(database, TAG_EVENT["JobId"])).state == JobState.SUCCEEDED


async def test_a_burst_is_stored_and_applied_in_full(
    signed_app: tuple[httpx.AsyncClient, Database, str], clock: FrozenClock
) -> None:
    http, database, _ = signed_app
    count = 300
    for i in range(0, count, 30):  # some submitted, the others learned from their callback
        # One media each: a submitted job is unique per media and type (tracker/models/jobs.py).
        await add_job(database, f"burst-{i}", media_id=f"media-{i}")
    limit = asyncio.Semaphore(32)

    async def deliver(i: int) -> int:
        body = {**TAG_EVENT, "JobId": f"burst-{i}", "Status": "fail" if i % 2 else "success"}
        async with limit:
            response = await http.post("/callbacks/vod", json=body, headers=signed_headers(clock))
        return response.status_code

    codes = await asyncio.gather(*(deliver(i) for i in range(count)))
    assert codes == [200] * count
    await settle(database)
    async with database.session() as session:
        states = dict(
            (await session.execute(select(Job.state, func.count()).group_by(Job.state))).all()
        )
        applied = await session.scalar(
            select(func.count()).select_from(CallbackEvent).where(CallbackEvent.applied.is_(True))
        )
    assert states == {JobState.SUCCEEDED: count // 2, JobState.FAILED: count // 2}
    assert applied == count


# -- PostgreSQL going away and coming back (a private throwaway cluster) --------------------------


def _as_owner(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def _pg_ctl(directory: Path, port: int, action: str) -> None:
    bindir = programs.postgres_bindir()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory}"
    extra = ["-o", options, "-l", str(directory / "log")] if action == "start" else ["-m", "fast"]
    subprocess.run(
        _as_owner(str(bindir / "pg_ctl"), "-D", str(directory / "data"), "-w", action, *extra),
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def private_postgres() -> Iterator[tuple[str, Path, int]]:
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as
    # the `postgres` user. The script creates, owns and finally removes the directory.
    programs.postgres_bindir()
    directory = Path(tempfile.gettempdir()) / f"tracker-test-pg-{os.getpid()}"
    script = ROOT / ".ci" / "postgres"
    port = free_port()  # kept across the restart; other test runs on this machine use others
    try:
        url = subprocess.run(
            ["bash", str(script), "start", str(directory), str(port)],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout.strip()
        yield url, directory, port
    finally:  # also after a failed start: stop what may have started, remove the directory
        subprocess.run(["bash", str(script), "stop", str(directory)], timeout=120, check=False)


async def test_postgres_outage_answers_503_and_recovers_without_restart(
    private_postgres: tuple[str, Path, int], clock: FrozenClock
) -> None:
    url, directory, port = private_postgres
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url, callback_url=URL, callback_auth_key=KEY)
    app = create_app(settings, clock=clock)
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        database: Database = context_of(app).database
        first = {**TAG_EVENT, "JobId": "before"}
        response = await http.post("/callbacks/vod", json=first, headers=signed_headers(clock))
        assert response.status_code == 200

        await asyncio.to_thread(_pg_ctl, directory, port, "stop")
        during = {**TAG_EVENT, "JobId": "during"}
        for _ in range(3):  # VOD's attempts while the database is down
            response = await http.post("/callbacks/vod", json=during, headers=signed_headers(clock))
            assert (response.status_code, response.json()["error"]) == (503, "unavailable")
        ready = await http.get("/readyz")
        assert ready.status_code == 503

        await asyncio.to_thread(_pg_ctl, directory, port, "start")
        codes = []
        for _ in range(100):  # bounded: the pool notices the restart on its next checkout
            response = await http.post("/callbacks/vod", json=during, headers=signed_headers(clock))
            codes.append(response.status_code)
            if response.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert codes[-1] == 200, codes
        assert set(codes) <= {200, 503}
        await settle(database)
        async with database.session() as session:
            stored = (
                await session.execute(text("SELECT job_id, applied FROM callback_events"))
            ).all()
        assert sorted(stored) == [("before", True), ("during", True)]


# -- end to end with the VOD simulator -------------------------------------------------------------


async def test_simulator_callbacks_drive_submitted_jobs_to_their_final_states(
    database_url: str,
) -> None:
    port = free_port()
    target = f"http://127.0.0.1:{port}/callbacks/vod"
    settings = Settings(database_url=database_url, callback_url=target, callback_auth_key=KEY)
    app = create_app(settings)  # real clock: the simulator signs with the time it sends
    async with serving(app, port):
        database: Database = context_of(app).database
        fake = FakeVod(
            access_key_id="ak",
            access_key_secret="secret",
            callback_url=target,
            auth_key=KEY,
            seed=5,
            faults=Faults(
                delay=1.0,  # processing time: the jobs are recorded (below) before they finish
                fail_rate=0.3,
                duplicate_rate=0.5,
                callback_interval=0.05,
            ),
        )
        await fake.start()
        try:
            client_settings = Settings(
                access_key_id="ak",
                access_key_secret="secret",  # type: ignore[arg-type]
                vod_endpoint=fake.url,
                vod_rate_limit=1000.0,
            )
            async with VodClient(client_settings) as vod:
                for i in range(10):
                    submitted = await vod.submit_ai_job(f"media-{i}", ["AIVideoTag", "AIMediaDNA"])
                    for ai_job in submitted.jobs:  # what the submitter records (issue 4)
                        await add_job(
                            database, ai_job.job_id, media_id=ai_job.media_id, type=ai_job.type
                        )
            await fake.idle(timeout=30)
        finally:
            await fake.stop()
        await settle(database)
        async with database.session() as session:
            jobs = {j.job_id: j for j in await session.scalars(select(Job))}
    truth = {job_id: fake_job.status for job_id, fake_job in fake.jobs.items()}
    assert len(truth) == 20
    expected = {"success": JobState.SUCCEEDED, "fail": JobState.FAILED}
    assert {job_id: jobs[job_id].state for job_id in truth} == {
        job_id: expected[status] for job_id, status in truth.items()
    }
    assert {j.origin for j in jobs.values()} == {"submitted"}
    failed = [fake.jobs[i] for i in truth if truth[i] == "fail"]
    assert failed
    assert all(jobs[f.job_id].code == f.code for f in failed)


# -- a killed server loses nothing it acknowledged ----------------------------------------------


async def test_every_acknowledged_callback_survives_kill_9(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/tracker.db"
    port = free_port()
    target = f"http://127.0.0.1:{port}/callbacks/vod"
    env = {"TRACKER_DATABASE_URL": url, "TRACKER_CALLBACK_URL": target}
    env["TRACKER_CALLBACK_AUTH_KEY"] = KEY
    server = TrackerProcess("serve", env=env, port=port)
    acked: list[str] = []
    try:
        await asyncio.to_thread(server.wait_ready)
        limit = asyncio.Semaphore(32)

        async def deliver(http: httpx.AsyncClient, i: int) -> None:
            timestamp = int(utcnow().timestamp())
            headers = {
                "X-VOD-TIMESTAMP": str(timestamp),
                "X-VOD-SIGNATURE": sign_callback(target, timestamp, KEY),
            }
            body = {**TAG_EVENT, "JobId": f"kill-{i}"}
            async with limit:
                with contextlib.suppress(httpx.TransportError):
                    response = await http.post(target, json=body, headers=headers)
                    if response.status_code == 200:
                        acked.append(body["JobId"])
                    if len(acked) == 150:
                        server.kill()  # SIGKILL in the middle of the burst

        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.gather(*(deliver(http, i) for i in range(400)))
        assert 150 <= len(acked) < 400
    finally:
        server.stop()

    restarted = TrackerProcess("serve", env=env, port=port)
    try:
        await asyncio.to_thread(restarted.wait_ready)
        database = Database(url)
        try:
            await settle(database)  # the restarted applier picks up what was stored
            async with database.session() as session:
                query = select(CallbackEvent.job_id, CallbackEvent.applied)
                stored = {job_id: applied for job_id, applied in await session.execute(query)}
                query = select(Job.job_id, Job.state)
                jobs = {job_id: state for job_id, state in await session.execute(query)}
        finally:
            await database.dispose()
    finally:
        restarted.stop()
    assert set(acked) <= set(stored)
    assert all(stored[job_id] is True for job_id in stored)
    assert set(jobs) == set(stored)  # one job per stored event, none twice
    assert set(jobs.values()) == {JobState.SUCCEEDED}


async def test_recording_is_busy_only_at_capacity(database: Database) -> None:
    """The applier's two signals: `recording()` right after a commit; `busy()` while a crowd
    waits for a writer, or callbacks flood in (over BUSY_RATE a second) in crowded batches or
    keeping the writers busy; never merely because one was committed or a few wait."""
    inbox = Inbox(database, clock=utcnow, writers=1)
    assert not inbox.recording()
    assert not inbox.busy()
    await inbox.start()
    try:
        for n in range(10):  # one at a time
            await inbox.record(row_for({**TAG_EVENT, "JobId": f"one{n}"}, utcnow()))
        assert inbox.recording()
        assert not inbox.busy()
        queued = [row_for({**TAG_EVENT, "JobId": f"queued{n}"}, utcnow()) for n in range(8)]
        for row in queued[:-1]:
            inbox._queue.put_nowait((row, None))  # type: ignore[arg-type]
        assert not inbox.busy()  # a few wait behind a commit
        inbox._queue.put_nowait((queued[-1], None))  # type: ignore[arg-type]
        assert inbox.busy()  # a crowd
        while not inbox._queue.empty():
            inbox._queue.get_nowait()
            inbox._queue.task_done()
        assert not inbox.busy()
        for _ in range(5):  # a flood: queued before a writer runs, crowded batches
            crowd = [row_for({**TAG_EVENT, "JobId": f"crowd{n}"}, utcnow()) for n in range(32)]
            await asyncio.gather(*(inbox.record(row) for row in crowd))
        assert inbox.rate() > inbox_module.BUSY_RATE
        assert inbox.busy()
        await asyncio.sleep(inbox_module.LOAD_SECONDS * 3)
        assert not inbox.recording()
        assert not inbox.busy()
    finally:
        await inbox.stop()


async def test_a_steady_hundred_a_second_is_never_busy(database: Database) -> None:
    """At 100 callbacks/s the writer idles most of the time: the applier must not pause."""
    inbox = Inbox(database, clock=utcnow, writers=1)
    await inbox.start()
    try:
        busy = []
        started = time.monotonic()
        for n in range(100):
            await asyncio.sleep(max(0.0, started + n / 100 - time.monotonic()))
            await inbox.record(row_for({**TAG_EVENT, "JobId": f"steady{n}"}, utcnow()))
            busy.append(inbox.busy())
        assert 50 < inbox.rate() < inbox_module.BUSY_RATE
        assert not any(busy)
    finally:
        await inbox.stop()


async def test_a_writer_keeps_its_connection_on_postgresql_only(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a writer waits for the next event with its connection (every checkout
    pays the pool's ping, three round trips); on SQLite it gives the one writer connection
    back after every batch that empties the queue, for the applier and the API."""
    from sqlalchemy import event

    checkouts = 0

    def count(*_: Any) -> None:
        nonlocal checkouts
        checkouts += 1

    monkeypatch.setattr(inbox_module, "HOLD_SECONDS", 60.0)  # however slow the machine
    inbox = Inbox(database, clock=utcnow, writers=1)
    await inbox.start()
    await inbox.applier.stop()  # its own turns would check the writer out too
    event.listen(database.writer.sync_engine, "checkout", count)
    try:
        for n in range(20):  # one at a time: the queue is empty after every batch
            await inbox.record(row_for({**TAG_EVENT, "JobId": f"linger{n}"}, utcnow()))
        stopping = asyncio.get_running_loop().time()
    finally:
        event.remove(database.writer.sync_engine, "checkout", count)
        await inbox.stop()
    assert inbox.batches == 20
    if database.is_sqlite:
        assert checkouts == 20
    else:  # held while events keep coming (up to HOLD_SECONDS), given back at the stop
        assert checkouts == 1
        assert asyncio.get_running_loop().time() - stopping < 5  # not held until the timeout
