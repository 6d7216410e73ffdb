"""Whatever was stored can be read back (issue 23, P2): a callback whose `Data` nests far deeper
than any result VOD sends is stored and answered 200, and then every read path answers it (the
job, the job lists, the change feed, the stream, the webhook), its result shown as text. A result
stored before the bound (or by a path that missed it) reads back too."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import LiveServer
from tests.factories import add_job
from tests.notify.receivers import Receiver
from tracker.api import notify as notify_api
from tracker.app import create_app
from tracker.config import Settings
from tracker.db import READ_JSON_DEPTH, Database, read_json
from tracker.models import JobState

DEPTH = 960  # about 2 KB of brackets, far under the 64 KiB body cap
DEEP = "[" * DEPTH + "]" * DEPTH
READS = ("/jobs/j1", "/jobs", "/jobs?media_id=m1", "/media/m1/jobs", "/changes?after=0")
PAGES = ("/ui/jobs/j1", "/ui/jobs", "/ui/media/m1", "/ui/")  # the console reads the same rows


def callback(data: str) -> dict[str, str]:
    return {
        "EventTime": "2026-01-02T03:04:05Z",
        "EventType": "AIVideoTagComplete",
        "JobId": "j1",
        "MediaId": "m1",
        "Status": "success",
        "Code": "0",
        "Message": "OK",
        "Data": data,
    }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    await rx.start()
    yield rx
    await rx.stop()


async def read_stream(http: httpx.AsyncClient) -> list[dict[str, str]]:
    """Every event of one stream from the start, until the server closes it."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with http.stream("GET", "/changes/stream", params={"after": 0}) as answer:
        assert answer.status_code == 200
        async for line in answer.aiter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = value
    return events


async def wait_for_job(http: httpx.AsyncClient) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = await http.get("/jobs/j1")
        assert answer.status_code in (200, 404), answer.text
        if answer.status_code == 200 and answer.json()["state"] == "succeeded":
            body: dict[str, object] = answer.json()
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("the callback was never applied")


async def test_a_deeply_nested_callback_result_is_stored_and_every_read_path_answers(
    database_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify_api, "STREAM_LIFE", 1.0)
    settings = Settings(
        database_url=database_url,
        scheduler="off",  # confirmation is off: no VOD credentials
        notify_allow_private="on",  # the receiver is on loopback
        notify_timeout=timedelta(seconds=2),
    )
    assert not settings.confirms_callbacks
    with LiveServer(create_app(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            made = await http.post("/subscriptions", json={"url": receiver.url})
            assert made.status_code == 201, made.text
            stored = await http.post("/callbacks/vod", json=callback(DEEP))
            assert stored.status_code == 200, stored.text
            job = await wait_for_job(http)
            assert job["result"] == DEEP  # too deep to be a structure: shown as its text
            for path in READS:
                answer = await http.get(path)
                assert answer.status_code == 200, f"{path}: {answer.text[:300]}"
                assert DEEP in answer.text or json.dumps(DEEP) in answer.text
            for path in PAGES:  # no API token set: the console is open
                answer = await http.get(path)
                assert answer.status_code == 200, f"{path}: {answer.text[:300]}"
            assert DEEP in (await http.get(PAGES[0])).text  # the raw result, as text
            events = await read_stream(http)
            finished = [e for e in events if e.get("event") == "job.succeeded"]
            assert json.loads(finished[0]["data"])["data"]["result"] == DEEP
            await receiver.wait_for(1)  # job.succeeded: a job learned from its callback
    bodies = [r.payload for r in receiver.received]
    assert any(b["type"] == "job.succeeded" and b["data"]["result"] == DEEP for b in bodies)


async def test_a_deep_result_stored_before_the_bound_still_reads(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A row written before the receiver bounded nesting: its result has the depth, and every
    reader still answers, the part too deep to render shown as its JSON text."""
    await add_job(database, "j1", JobState.PROCESSING, media_id="m1")
    cast = "CAST(:deep AS JSONB)" if not database.is_sqlite else ":deep"
    async with database.write() as session:
        await session.execute(
            text(f"UPDATE jobs SET result = {cast}, state = 'succeeded' WHERE job_id = 'j1'"),
            {"deep": '{"Keyword": ' + DEEP + "}"},  # text: a parser would recurse 960 times
        )
    for path in READS + PAGES:
        answer = await client.get(path)
        assert answer.status_code == 200, f"{path}: {answer.text[:300]}"
    job = (await client.get("/jobs/j1")).json()
    assert job["state"] == "succeeded"
    assert job["result"]["Keyword"] == DEEP
    (change,) = [c for c in (await client.get("/changes?after=0")).json()["items"] if c["seq"] > 1]
    # As it was stored, written out by the database (SQLite's json() drops the space).
    assert change["data"]["result"].replace(" ", "") == '{"Keyword":' + DEEP + "}"


@pytest.mark.parametrize("depth", [1, READ_JSON_DEPTH - 1, READ_JSON_DEPTH, 5000])
def test_read_json_keeps_what_can_be_rendered_and_shows_the_rest_as_text(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    value = read_json(json.dumps({"a": 1, "deep": json.loads(nested) if depth < 900 else 0}))
    assert value["a"] == 1
    raw = '{"a": 1, "deep": ' + nested + ', "s": "[[[["}'
    read = read_json(raw)
    assert read["a"] == 1
    assert read["s"] == "[[[["  # brackets in strings are not nesting
    if depth < READ_JSON_DEPTH:
        assert read["deep"] == json.loads(nested)
    else:
        assert read["deep"] == nested
    json.dumps(read)  # and what it gives can be rendered
