"""MNS consumption under faults: real `tracker serve` processes consuming the simulator's queue.

VOD (the in-process simulator) writes its completion events to an MNS queue (`mns_queue=`);
each tracker consumes it. Every test ends with the tracker's database equal to the simulator's
truth and each outcome applied once, on SQLite and on PostgreSQL (TRACKER_TEST_DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tests.e2e.test_faults import (  # fixtures (make_fake, spawn, cluster) are used by name
    TOKEN,
    Cluster,
    applied_once,
    cluster,
    make_fake,
    postgres_only,
    read_db,
    ready,
    serve_env,
    signed,
    spawn,
    submit,
    until_true,
    write_lock,
)
from tests.processes import TrackerProcess, free_port
from tracker.db import upgrade
from tracker.fakevod import FakeVod, Faults

__all__ = ["cluster", "make_fake", "spawn"]  # imported fixtures, not unused names

QUEUE = "fault-events"
VISIBILITY = 3  # seconds a received message stays invisible before it comes back


async def queue_fake(make_fake: Callable[..., Awaitable[FakeVod]], **options: Any) -> FakeVod:
    """The simulator with its completion events routed to QUEUE (SetMessageCallback MNS)."""
    fake = await make_fake(mns_queue=QUEUE, **options)
    fake.mns.queues[QUEUE].attributes["VisibilityTimeout"] = VISIBILITY
    return fake


def mns_env(database_url: str, port: int, fake: FakeVod, **settings: str) -> dict[str, str]:
    return serve_env(
        database_url,
        port,
        fake.url,
        mns_endpoint=fake.mns.url,
        mns_queue=QUEUE,
        mns_wait="2",
        mns_failed_retry="2s",
        **settings,
    )


async def mns_status(process: TrackerProcess) -> dict[str, Any]:
    """The consumer's detail in /readyz, which shows it to the API's callers only."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=5, headers=auth) as http:
        body: dict[str, Any] = (await http.get(f"{process.url}/readyz")).json()
    return dict(body.get("mns") or {})


async def until(what: str, check: Callable[[], Any], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not (await check() if asyncio.iscoroutinefunction(check) else check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_kill_9_mid_consume_loses_nothing_and_absorbs_redeliveries(
    database_url: str, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    fake = await queue_fake(
        make_fake, seed=15, faults=Faults(delay=0.3, fail_rate=0.3, duplicate_rate=0.3)
    )
    port = free_port()
    env = mns_env(database_url, port, fake)
    server = spawn("serve", "--no-scheduler", env=env, port=port)
    await ready(server)
    await submit([server.url], [f"kill-{n}" for n in range(30)])

    async def some_stored() -> bool:
        return len((await read_db(database_url))[1]) >= 10

    await until("some events consumed", some_stored)
    # The database stalls (another connection holds the inbox's write lock): batches received
    # meanwhile wait for their commit, and the tracker is killed while they do.
    async with write_lock(database_url):
        await asyncio.sleep(1.5)
        server.kill()
    await fake.idle(15)
    _, events = await read_db(database_url)
    stored = {(e.job_id, e.status) for e in events}
    deleted = {(json.loads(b)["JobId"], json.loads(b)["Status"]) for b in fake.mns.deleted_bodies}
    assert deleted <= stored  # every message deleted had its row committed first
    assert fake.mns.depth(QUEUE) > 0, "the kill came too late to interrupt consumption"

    server = spawn("serve", "--no-scheduler", env=env, port=port)
    await ready(server)
    await until_true(fake, database_url, 30)
    await until("the queue to drain", lambda: fake.mns.depth(QUEUE) == 0)
    _, events = await read_db(database_url)
    assert applied_once(events) == len(fake.jobs)  # redeliveries and duplicates absorbed
    assert sum(e.deliveries for e in events) >= len(fake.jobs) + 1


async def test_two_replicas_on_one_queue_apply_each_event_once(
    database_url: str, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    fake = await queue_fake(
        make_fake, seed=16, faults=Faults(delay=0.3, fail_rate=0.3, duplicate_rate=0.5)
    )
    ports = [free_port(), free_port()]
    replicas = [
        spawn("serve", "--no-scheduler", env=mns_env(database_url, port, fake), port=port)
        for port in ports
    ]
    for replica in replicas:
        await ready(replica)
    await submit([r.url for r in replicas], [f"rep-{n}" for n in range(30)])
    await fake.idle(15)  # the duplicate writes come a second after the first
    await until_true(fake, database_url, 30)
    await until("the queue to drain", lambda: fake.mns.depth(QUEUE) == 0)
    _, events = await read_db(database_url)
    assert applied_once(events) == len(fake.jobs)
    assert any(job.acknowledged > 1 for job in fake.jobs.values()), "no duplicate was written"
    consumed = [(await mns_status(r))["messages"].get("stored", 0) for r in replicas]
    assert all(consumed), f"one replica consumed nothing: {consumed}"


async def test_database_down_deletes_nothing_and_consumption_resumes(
    database_url: str, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    fake = await queue_fake(make_fake, seed=17, faults=Faults(delay=1.5))
    port = free_port()
    server = spawn("serve", "--no-scheduler", env=mns_env(database_url, port, fake), port=port)
    await ready(server)
    await submit([server.url], [f"down-{n}" for n in range(3)])
    # The events reach the queue while the database refuses every commit (another connection
    # holds the inbox's write lock): each store fails (STORE_TIMEOUT), nothing is deleted.
    async with write_lock(database_url):
        await fake.idle(10)

        async def not_stored() -> bool:
            return (await mns_status(server))["messages"].get("not_stored", 0) > 0

        await until("a failed store", not_stored, 20)
        assert fake.mns.deleted == 0
        assert fake.mns.depth(QUEUE) == len(fake.jobs)
    await until_true(fake, database_url, 30)
    await until("the queue to drain", lambda: fake.mns.depth(QUEUE) == 0)
    assert applied_once((await read_db(database_url))[1]) == len(fake.jobs)
    assert server.process.poll() is None


async def test_mns_down_30s_leaves_http_callbacks_working_and_resumes(
    database_url: str, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    fake = await queue_fake(make_fake, seed=18, faults=Faults(delay=0.3))
    port = free_port()
    server = spawn("serve", "--no-scheduler", env=mns_env(database_url, port, fake), port=port)
    await ready(server)
    fake.mns.outage = True  # the queue API drops every connection; VOD's own writes still land
    await submit([server.url], [f"mns-down-{n}" for n in range(4)])
    await fake.idle(10)
    assert fake.mns.depth(QUEUE) == len(fake.jobs)
    async with httpx.AsyncClient(timeout=10) as http:
        url = f"{server.url}/callbacks/vod"
        unrelated = json.dumps({"EventType": "FileUploadComplete", "VideoId": "v-during-outage"})
        response = await http.post(url, content=unrelated, headers=signed(url))
        assert response.status_code == 200  # HTTP callbacks are unaffected
        status = await mns_status(server)
        assert status["state"] == "backing_off"
        metrics = (await http.get(f"{server.url}/metrics")).text
        assert 'tracker_mns_errors_total{kind="unreachable"}' in metrics
    await asyncio.sleep(30)
    assert (await mns_status(server))["state"] == "backing_off"
    fake.mns.outage = False
    await until_true(fake, database_url, 30)
    assert (await mns_status(server))["state"] == "running"
    _, events = await read_db(database_url)
    assert applied_once([e for e in events if e.job_id]) == len(fake.jobs)
    assert any(e.event_type == "FileUploadComplete" for e in events)
    assert server.process.poll() is None


@postgres_only
async def test_postgres_stopped_deletes_nothing_and_consumption_resumes(
    cluster: Cluster, make_fake: Callable[..., Awaitable[FakeVod]], spawn: Any
) -> None:
    await asyncio.to_thread(upgrade, cluster.url)
    fake = await queue_fake(make_fake, seed=19, faults=Faults(delay=1.5, fail_rate=0.3))
    port = free_port()
    server = spawn("serve", "--no-scheduler", env=mns_env(cluster.url, port, fake), port=port)
    await ready(server)
    await submit([server.url], [f"pg-down-{n}" for n in range(4)])
    await cluster.stop_server()
    await fake.idle(10)

    async def not_stored() -> bool:
        return (await mns_status(server))["messages"].get("not_stored", 0) > 0

    await until("a failed store", not_stored, 20)
    assert fake.mns.deleted == 0
    assert fake.mns.depth(QUEUE) == len(fake.jobs)
    assert server.process.poll() is None
    await cluster.start_server()
    await until_true(fake, cluster.url, 40)
    await until("the queue to drain", lambda: fake.mns.depth(QUEUE) == 0)
    assert applied_once((await read_db(cluster.url))[1]) == len(fake.jobs)
