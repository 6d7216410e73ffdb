"""Pull, for systems that cannot receive webhooks: the change feed, its live stream (SSE) and the
long-poll of GET /jobs/{id}?wait=."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import LiveServer
from tests.factories import add_job
from tracker.api import notify as notify_api
from tracker.db import Database
from tracker.models import JobState
from tracker.scheduler.retention import prune_changes
from tracker.transitions import Outcome, apply_outcome

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def finish(database: Database, job_id: str, status: str = "success") -> None:
    outcome = Outcome(job_id=job_id, type="AIVideoTag", status=status, media_id="m1")
    async with database.write() as session:
        await apply_outcome(session, outcome, NOW)


async def test_the_feed_pages_through_changes_in_order(
    client: httpx.AsyncClient, database: Database
) -> None:
    await add_job(database, "j1", JobState.PROCESSING, media_id="m1")
    await add_job(database, "j2", JobState.PROCESSING, media_id="m2")
    await finish(database, "j1")
    await finish(database, "j2", "fail")
    page = (await client.get("/changes", params={"limit": 3})).json()
    assert [item["type"] for item in page["items"]] == [
        "job.submitted",
        "job.submitted",
        "job.succeeded",
    ]
    assert page["next_after"] == page["items"][-1]["seq"]
    rest = (await client.get("/changes", params={"after": page["next_after"]})).json()
    assert [(i["type"], i["data"]["job_id"]) for i in rest["items"]] == [("job.failed", "j2")]
    assert rest["next_after"] == rest["items"][0]["seq"]
    empty = (await client.get("/changes", params={"after": rest["next_after"]})).json()
    assert empty == {"items": [], "next_after": rest["next_after"]}
    failed = (await client.get("/changes", params={"type": "job.failed"})).json()
    assert [i["data"]["job_id"] for i in failed["items"]] == ["j2"]
    by_media = (await client.get("/changes", params={"media_id": "m1"})).json()
    assert {i["data"]["job_id"] for i in by_media["items"]} == {"j1"}


async def test_a_cursor_older_than_retained_is_410(
    client: httpx.AsyncClient, database: Database
) -> None:
    await add_job(database, "j1", JobState.PROCESSING, at=NOW - timedelta(days=40))
    await add_job(database, "j2", JobState.PROCESSING, at=NOW)
    await prune_changes(database, NOW - timedelta(days=30))
    gone = await client.get("/changes", params={"after": 0})
    assert gone.status_code == 410
    assert gone.json()["error"] == "changes_gone"
    assert (await client.get("/changes", params={"after": 1})).status_code == 200
    assert (await client.get("/changes")).status_code == 200  # no cursor: the oldest kept


@pytest.mark.parametrize(
    "params",
    [{"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"type": "job.nope"}, {"colour": "red"}],
)
async def test_bad_feed_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    answer = await client.get("/changes", params=params)
    assert answer.status_code == 400
    assert answer.json()["message"]


async def test_the_stream_sends_changes_as_server_sent_events_and_resumes(
    app: Starlette, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify_api, "STREAM_LIFE", 1.5)
    await add_job(database, "j1", JobState.PROCESSING)
    with LiveServer(app) as base:  # a real socket: the events must arrive as they happen
        async with httpx.AsyncClient(base_url=base) as http:
            events: list[dict[str, str]] = []
            async with http.stream("GET", "/changes/stream", params={"after": 0}) as answer:
                assert answer.headers["content-type"].startswith("text/event-stream")
                started = time.monotonic()
                current: dict[str, str] = {}
                finished = False
                async for line in answer.aiter_lines():
                    if not line:
                        if current:
                            events.append(current)
                        current = {}
                        if len(events) == 1 and not finished:
                            finished = True
                            await finish(database, "j1")  # arrives on the open stream
                        continue
                    field, _, value = line.partition(": ")
                    current[field] = value
            assert time.monotonic() - started < 5  # the stream's life is capped
            changes = [e for e in events if e.get("event", "").startswith("job.")]
            assert [e["event"] for e in changes] == ["job.submitted", "job.succeeded"]
            assert json.loads(changes[1]["data"])["data"]["state"] == "succeeded"
            assert events[-1]["event"] == "reconnect"
            headers = {"Last-Event-ID": changes[0]["id"]}
            async with http.stream("GET", "/changes/stream", headers=headers) as answer:
                lines = [line async for line in answer.aiter_lines()]
            assert f"id: {changes[1]['id']}" in lines
            assert f"id: {changes[0]['id']}" not in lines


async def test_long_poll_answers_when_the_job_changes(
    client: httpx.AsyncClient, database: Database
) -> None:
    await add_job(database, "j1", JobState.PROCESSING)

    async def later() -> None:
        await asyncio.sleep(0.3)
        await finish(database, "j1")

    started = time.monotonic()
    answer, _ = await asyncio.gather(client.get("/jobs/j1", params={"wait": "10s"}), later())
    assert answer.json()["state"] == "succeeded"
    assert time.monotonic() - started < 3


async def test_long_poll_answers_at_once_when_final_and_at_the_timeout_otherwise(
    client: httpx.AsyncClient, database: Database
) -> None:
    await add_job(database, "done", JobState.SUCCEEDED)
    await add_job(database, "running", JobState.PROCESSING)
    started = time.monotonic()
    assert (await client.get("/jobs/done", params={"wait": "30s"})).json()["state"] == "succeeded"
    assert time.monotonic() - started < 1
    started = time.monotonic()
    running = await client.get("/jobs/running", params={"wait": "700ms"})
    assert running.json()["state"] == "processing"
    assert 0.6 < time.monotonic() - started < 3
    for bad in ("61s", "soon", "-1"):
        assert (await client.get("/jobs/running", params={"wait": bad})).status_code == 400
