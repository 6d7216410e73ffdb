"""Notification faults with real `tracker serve` processes: kill -9 mid-burst, two replicas, a
receiver down for its first attempts. Every change reaches the subscription at least once;
duplicates (the same webhook-id twice) are counted, and held to the bound the relay states."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from tests.factories import new_job
from tests.notify.receivers import Receiver
from tests.processes import TrackerProcess
from tracker.db import Database
from tracker.models import JobState
from tracker.notify.recorder import duplicate_bound
from tracker.notify.subscriptions import SubscriptionInput, create_subscription


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_SCHEDULER": "off",
        "TRACKER_NOTIFY_ALLOW_PRIVATE": "on",
        "TRACKER_NOTIFY_TIMEOUT": "2s",
        "TRACKER_NOTIFY_RETRY_SCHEDULE": "0s,0.5s,1s,1s,1s,1s,1s,1s,1s,1s",
        **extra,
    }


@pytest.fixture
def spawn() -> Iterator[Callable[..., TrackerProcess]]:
    started: list[TrackerProcess] = []

    def start(env: dict[str, str]) -> TrackerProcess:
        process = TrackerProcess("serve", env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(timeout=10)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    await rx.start()
    yield rx
    await rx.stop()


async def ready(process: TrackerProcess) -> None:
    await asyncio.to_thread(process.wait_ready)


async def subscribe(database: Database, url: str) -> str:
    async with database.write() as session:
        sub = await create_subscription(session, SubscriptionInput(url=url), datetime.now(UTC))
        return sub.secret


async def changes(database: Database, count: int, prefix: str) -> None:
    """`count` new jobs with a JobId: one `job.submitted` change each, committed in chunks."""
    for start in range(0, count, 100):
        async with database.write() as session:
            session.add_all(
                new_job(f"{prefix}-{n}", JobState.PROCESSING)
                for n in range(start, min(count, start + 100))
            )


async def all_arrive(receiver: Receiver, ids: set[str], within: float) -> Counter[str]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen = Counter(r.headers["webhook-id"] for r in receiver.received)
        if ids <= set(seen):
            return seen
        await asyncio.sleep(0.1)
    missing = ids - {r.headers["webhook-id"] for r in receiver.received}
    raise AssertionError(f"{len(missing)} changes never delivered, e.g. {sorted(missing)[:5]}")


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether the process runs (not gone, nor a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def ended(pid: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not running(pid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} still runs {within}s after its parent was killed")


def expected_ids(first_seq: int, count: int) -> set[str]:
    return {f"chg_{seq}" for seq in range(first_seq, first_seq + count)}


async def test_kill_9_mid_burst_delivers_every_change_after_restart(
    database_url: str, database: Database, receiver: Receiver, spawn: Callable[..., TrackerProcess]
) -> None:
    """Killed once more deliveries had arrived than the stated bound: a relay that recorded
    nothing before the kill would send them all again; this one sends again at most the
    deliveries in flight and one recorder's worth of results."""
    bound = duplicate_bound(concurrency=4, subscriptions=1, courier=True)
    total = 2 * bound + 400

    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.005)
        return web.Response(status=204)

    receiver.behaviour = slow
    receiver.secret = await subscribe(database, receiver.url)
    first = spawn(
        env_for(database_url, TRACKER_NOTIFY_CONCURRENCY="4", TRACKER_NOTIFY_COURIER="on")
    )
    await ready(first)
    await changes(database, total, "burst")
    await receiver.wait_for(bound + 100, within=90)
    couriers = children(first.process.pid)
    assert couriers, "the relay sent through no courier"
    first.kill()  # mid-burst: some deliveries are leased, some sent but not recorded
    assert len({r.headers["webhook-id"] for r in receiver.received}) < total
    for pid in couriers:  # its input closed with the relay: it exits, sending no more
        await ended(pid, within=10)
    second = spawn(env_for(database_url))
    await ready(second)
    seen = await all_arrive(receiver, expected_ids(1, total), within=120)
    duplicates = sum(n - 1 for n in seen.values())
    assert all(r.verified for r in receiver.received)
    assert duplicates <= bound, (duplicates, bound)


async def test_two_replicas_share_the_work_without_sending_one_delivery_twice(
    database_url: str, database: Database, receiver: Receiver, spawn: Callable[..., TrackerProcess]
) -> None:
    receiver.secret = await subscribe(database, receiver.url)
    replicas = [spawn(env_for(database_url)) for _ in range(2)]
    for replica in replicas:
        await ready(replica)
    await changes(database, 300, "pair")
    seen = await all_arrive(receiver, expected_ids(1, 300), within=90)
    duplicates = sum(n - 1 for n in seen.values())
    assert all(r.verified for r in receiver.received)
    assert duplicates == 0  # no lease expired: every request answered well within the timeout


async def test_a_receiver_down_then_up_gets_its_delivery_on_the_schedule(
    database_url: str, database: Database, spawn: Callable[..., TrackerProcess]
) -> None:
    # The receiver's port is bound here and held, not listened on, until the receiver is up:
    # the first attempts are refused, and no other program can take the port meanwhile.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{held.getsockname()[1]}/hook"
    secret = await subscribe(database, url)
    tracker = spawn(env_for(database_url))
    await ready(tracker)
    await changes(database, 1, "late")
    await asyncio.sleep(2.5)  # the first attempts find nothing listening
    late = Receiver(secret=secret)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", late.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, held).start()  # aiohttp listens on the socket and closes it
    try:
        await late.wait_for(1, within=15)
        assert late.received[0].verified
        assert late.received[0].headers["webhook-id"] == "chg_1"
    finally:
        await runner.cleanup()
