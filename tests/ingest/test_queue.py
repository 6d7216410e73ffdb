"""The MNS consumer in the app: the simulator's queue on loopback, the real inbox and database."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr, TypeAdapter
from sqlalchemy import select

from tracker.api import schemas
from tracker.app import create_app
from tracker.clock import FrozenClock
from tracker.config import Settings
from tracker.context import context_of
from tracker.db import Database
from tracker.fakevod.mns import FakeMns
from tracker.ingest.queue import MnsConsumer, event_body
from tracker.mns.client import MnsClient
from tracker.mns.signing import StaticCredentials, StaticKey
from tracker.models import CallbackEvent

AK, SECRET = "LTAImnsConsumer", "mns-consumer-secret"
QUEUE = "vod-events"


def ai_event(job_id: str, status: str = "success") -> dict[str, Any]:
    return {
        "EventTime": "2026-01-02T03:04:05Z",
        "EventType": "AIVideoTagComplete",
        "JobId": job_id,
        "MediaId": "media-1",
        "Status": status,
        "Code": "0",
        "Message": "OK",
        "Data": '{"Keyword":[]}',
    }


@pytest.fixture
async def mns() -> AsyncIterator[FakeMns]:
    fake = FakeMns(AK, SECRET, seed=1)
    await fake.start()
    fake.create_queue(QUEUE, VisibilityTimeout=2)
    yield fake
    await fake.stop()


@pytest.fixture
async def sender(mns: FakeMns) -> AsyncIterator[MnsClient]:
    client = MnsClient(mns.url, StaticCredentials(StaticKey(AK, SECRET)))
    yield client
    await client.close()


def mns_settings(settings: Settings, mns: FakeMns, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "mns_endpoint": mns.url,
            "mns_queue": QUEUE,
            "mns_wait": 1,
            "access_key_id": AK,
            "access_key_secret": SecretStr(SECRET),
            "callback_confirm": "off",
            **extra,
        }
    )


@pytest.fixture
def run_app(settings: Settings, mns: FakeMns, clock: FrozenClock) -> Callable[..., Any]:
    """`async with run_app(**settings) as (app, client):` the app consuming the fake queue."""
    import contextlib

    @contextlib.asynccontextmanager
    async def run(**extra: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
        app = create_app(mns_settings(settings, mns, **extra), clock=clock)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                yield app, http

    return run


async def rows(database_url: str) -> list[CallbackEvent]:
    database = Database(database_url)
    try:
        async with database.session() as session:
            return list(await session.scalars(select(CallbackEvent).order_by(CallbackEvent.id)))
    finally:
        await database.dispose()


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_bodies_raw_or_base64_json() -> None:
    text = json.dumps(ai_event("j1"))
    assert event_body(text) == (text.encode(), "raw")
    assert event_body("  \n" + text) == (("  \n" + text).encode(), "raw")
    encoded = base64.b64encode(text.encode()).decode()
    assert event_body(encoded) == (text.encode(), "base64")
    assert event_body("hello") == (b"hello", "raw")  # neither: stored as malformed
    assert event_body(base64.b64encode(b"not json").decode())[1] == "raw"


async def test_raw_and_base64_messages_share_the_http_dedup_and_are_deleted(
    run_app: Callable[..., Any], mns: FakeMns, sender: MnsClient, database_url: str
) -> None:
    event = json.dumps(ai_event("job-a"))
    async with run_app() as (app, http):
        # The same event by HTTP first, then twice by MNS (raw, then base64): one row.
        response = await http.post("/callbacks/vod", content=event)
        assert response.status_code == 200
        await sender.send(QUEUE, [event, base64.b64encode(event.encode()).decode()])
        await sender.send(QUEUE, [json.dumps(ai_event("job-b", "fail"))])

        async def drained() -> bool:
            return mns.depth(QUEUE) == 0 and len(await rows(database_url)) == 2

        await until(drained)
        status = context_of(app).mns.status()  # type: ignore[union-attr]
    stored = {row.job_id: row for row in await rows(database_url)}
    assert stored["job-a"].deliveries == 3
    assert stored["job-a"].headers.get("remote") == "127.0.0.1"  # the HTTP one came first
    assert stored["job-b"].headers["channel"] == "mns"
    assert stored["job-b"].status == "fail"
    assert status["state"] == "running"
    assert status["messages"] == {"stored": 1, "duplicate": 2, "deleted": 3}
    assert mns.deleted == 3


async def test_unparseable_body_is_stored_for_inspection_and_deleted(
    run_app: Callable[..., Any], mns: FakeMns, sender: MnsClient, database_url: str
) -> None:
    async with run_app():
        await sender.send(QUEUE, ["this is not an event", '{"EventType": 5}'])

        async def drained() -> bool:
            return mns.depth(QUEUE) == 0 and len(await rows(database_url)) == 2

        await until(drained)
    stored = await rows(database_url)
    assert [row.reason.split(":")[0] for row in stored] == ["malformed", "malformed"]
    assert {row.body for row in stored} == {"this is not an event", '{"EventType": 5}'}
    assert all(row.applied is False for row in stored)


async def test_missing_queue_fails_once_in_the_log_and_recovers(
    run_app: Callable[..., Any],
    mns: FakeMns,
    sender: MnsClient,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    del mns.queues[QUEUE]
    caplog.set_level(logging.INFO, "tracker.ingest.queue")
    async with run_app(mns_failed_retry=timedelta(seconds=0.3)) as (app, http):
        consumer: MnsConsumer = context_of(app).mns  # type: ignore[assignment]

        async def failed() -> bool:
            return consumer.state == "failed"

        await until(failed)
        await asyncio.sleep(1)  # several slow retries
        ready = (await http.get("/readyz")).json()
        assert ready["status"] == "ready"  # the webhook keeps serving
        assert ready["mns"]["state"] == "failed"
        assert "QueueNotExist" in ready["mns"]["last_error"]
        stats = (await http.get("/stats")).json()
        assert stats["mns"]["state"] == "failed"
        for shape, body in ((schemas.Probe, ready), (schemas.Stats, stats)):
            TypeAdapter(shape).validate_python(body, strict=True)  # as declared in the document
        metrics = (await http.get("/metrics")).text
        assert 'tracker_mns_consumer_state{state="failed"} 1.0' in metrics

        mns.create_queue(QUEUE)
        await sender.send(QUEUE, [json.dumps(ai_event("job-c"))])

        async def consumed() -> bool:
            return len(await rows(database_url)) == 1 and mns.depth(QUEUE) == 0

        await until(consumed)
        assert consumer.state == "running"
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert "QueueNotExist" in failures[0].getMessage()
    assert "TRACKER_MNS_QUEUE" in failures[0].getMessage()


async def test_unreachable_mns_backs_off_while_http_callbacks_keep_working(
    run_app: Callable[..., Any], mns: FakeMns, sender: MnsClient, database_url: str
) -> None:
    async with run_app() as (app, http):
        consumer: MnsConsumer = context_of(app).mns  # type: ignore[assignment]
        mns.outage = True

        async def backing_off() -> bool:
            return consumer.state == "backing_off"

        await until(backing_off)
        response = await http.post("/callbacks/vod", content=json.dumps(ai_event("by-http")))
        assert response.status_code == 200
        ready = (await http.get("/readyz")).json()
        assert ready["mns"]["state"] == "backing_off"
        metrics = (await http.get("/metrics")).text
        assert 'tracker_mns_errors_total{kind="unreachable"}' in metrics

        mns.outage = False
        await sender.send(QUEUE, [json.dumps(ai_event("by-mns"))])

        async def both() -> bool:
            return {r.job_id for r in await rows(database_url)} == {"by-http", "by-mns"}

        await until(both, 20)
        assert consumer.state == "running"


async def test_expired_receipt_handle_is_logged_not_fatal(
    mns: FakeMns,
    sender: MnsClient,
    database: Database,
    database_url: str,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tracker.ingest.inbox import Inbox

    mns.create_queue("short", VisibilityTimeout=1)
    await sender.send("short", [json.dumps(ai_event("job-late"))])
    [message] = await sender.receive("short", 16, 1)
    await asyncio.sleep(1.1)  # its visibility timeout passes before it is stored
    inbox = Inbox(database, clock=clock)
    await inbox.start()
    client = MnsClient(mns.url, StaticCredentials(StaticKey(AK, SECRET)))
    consumer = MnsConsumer(client, "short", inbox, clock=clock, wait=1)
    caplog.set_level(logging.INFO, "tracker.ingest.queue")
    try:
        await consumer._consume([message])
    finally:
        await consumer.stop()  # waits for the delete it started, closes the client
        await inbox.stop()
    assert consumer.counts["stored"] == 1
    assert consumer.counts["expired_handles"] == 1
    assert "no longer valid (MessageNotExist)" in caplog.text
    assert mns.depth("short") == 1  # it comes back; the inbox will absorb it as a duplicate
    assert [row.job_id for row in await rows(database_url)] == ["job-late"]
