"""Notifications never cost the webhook its answers, with real `tracker serve` processes: a
subscriber whose name does not resolve never stops the service, a bad notify setting is one line,
and a cap's worth of subscriptions to a receiver that never answers leaves VOD's signed callbacks
answered 200, never 503."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_startup import refused
from tests.processes import TrackerProcess, free_port
from tracker.db import Database
from tracker.notify.subscriptions import SubscriptionInput, create_subscription
from tracker.vod import sign_callback

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AUTH_KEY = "Limits9Key"
CALLBACKS = 60


class BlackHole:
    """A receiver that accepts every connection, reads what comes, and never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""
        self._held: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._held.add(writer)
            while await reader.read(65536):
                pass

        self.server = await asyncio.start_server(swallow, "127.0.0.1", 0, backlog=1024)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        # Connections accepted just before the close (a courier process of the tracker may
        # outlive it by a moment) reach `swallow` a few turns of the loop later.
        await asyncio.sleep(0.1)
        for writer in list(self._held):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self.server is not None:
            await self.server.wait_closed()


@pytest.fixture
async def hole() -> AsyncIterator[BlackHole]:
    receiver = BlackHole()
    await receiver.start()
    yield receiver
    await receiver.stop()


def callback(job_id: str) -> bytes:
    return json.dumps(
        {
            "EventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "EventType": "AIVideoTagComplete",
            "JobId": job_id,
            "MediaId": f"media-{job_id}",
            "Status": "success",
            "Code": "0",
            "Message": "OK",
            "Data": json.dumps({"Keyword": [{"Tag": "cat"}]}),
        }
    ).encode()


async def test_a_cap_of_subscriptions_to_a_black_hole_leaves_callbacks_answered(
    database_url: str, database: Database, hole: BlackHole
) -> None:
    """Each subscription holds its concurrency's requests open for the whole timeout, and every
    callback's change is owed to all of them: the callbacks are still all answered 200."""
    async with database.write() as session:
        for n in range(100):  # the default cap's worth
            data = SubscriptionInput(url=f"{hole.url}/{n}")
            await create_subscription(session, data, datetime.now(UTC))
    port = free_port()
    url = f"http://127.0.0.1:{port}/callbacks/vod"
    process = TrackerProcess(
        "serve",
        port=port,
        env={
            "TRACKER_DATABASE_URL": database_url,
            "TRACKER_SCHEDULER": "off",
            "TRACKER_NOTIFY_ALLOW_PRIVATE": "on",
            "TRACKER_CALLBACK_CONFIRM": "off",
            "TRACKER_CALLBACK_URL": url,
            "TRACKER_CALLBACK_AUTH_KEY": AUTH_KEY,
        },
    )
    try:
        await asyncio.to_thread(process.wait_ready)
        answers: list[tuple[int, float]] = []

        async def one(http: httpx.AsyncClient, n: int) -> None:
            stamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "X-VOD-TIMESTAMP": str(stamp),
                "X-VOD-SIGNATURE": sign_callback(url, stamp, AUTH_KEY),
            }
            began = time.monotonic()
            answer = await http.post(url, content=callback(f"hole-{n}"), headers=headers)
            answers.append((answer.status_code, time.monotonic() - began))

        async with httpx.AsyncClient(timeout=30) as http:
            tasks = []
            for n in range(CALLBACKS):  # 10 a second, as a burst of VOD's events
                tasks.append(asyncio.create_task(one(http, n)))
                await asyncio.sleep(0.1)
            await asyncio.gather(*tasks)
        log = process.log
    finally:
        process.stop()
    statuses = [status for status, _ in answers]
    took = sorted(seconds for _, seconds in answers)
    assert statuses == [200] * CALLBACKS, (statuses, took)
    # The relay was really sending to the black hole meanwhile: some subscriptions held their
    # requests open while the callbacks came.
    assert hole.connections >= 50, hole.connections
    assert "Traceback" not in log, log
    # Within VOD's budget for a callback (about 15 s) by far: the webhook never waited behind
    # the relay's requests or its writes.
    assert took[-1] < 5, (statistics.median(took), took)


def test_a_notify_url_that_does_not_resolve_never_stops_serve(tmp_path: Path) -> None:
    process = TrackerProcess(
        "serve",
        env={
            "TRACKER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db",
            "TRACKER_SCHEDULER": "off",
            "TRACKER_NOTIFY_URL": "https://hooks.does-not-resolve.invalid/hook",
            "TRACKER_NOTIFY_SECRET": SECRET,
        },
    )
    try:
        assert process.wait_ready().status_code == 200
        for _ in range(100):
            if "TRACKER_NOTIFY_URL not declared yet" in process.log:
                break
            time.sleep(0.1)
        log = process.log
        assert process.process.poll() is None, log  # still serving
    finally:
        process.stop()
    said = next(line for line in log.splitlines() if "TRACKER_NOTIFY_URL" in line)
    assert "does-not-resolve.invalid" in said
    assert "retried in" in said
    assert "Traceback" not in log, log


@pytest.mark.parametrize(
    ("env", "variable", "words"),
    [
        ({"TRACKER_NOTIFY_URL": "https://hooks.example.com/x"}, "TRACKER_NOTIFY_SECRET", "is not"),
        (
            {"TRACKER_NOTIFY_URL": "http://10.1.2.3/x", "TRACKER_NOTIFY_SECRET": SECRET},
            "TRACKER_NOTIFY_URL",
            "private",
        ),
        (
            {"TRACKER_NOTIFY_URL": "ftp://hooks.example.com/x", "TRACKER_NOTIFY_SECRET": SECRET},
            "TRACKER_NOTIFY_URL",
            "http or https",
        ),
        (
            {"TRACKER_NOTIFY_URL": "https://hooks.example.com/x", "TRACKER_NOTIFY_SECRET": "!"},
            "TRACKER_NOTIFY_SECRET",
            "not a signing secret",
        ),
    ],
    ids=["no-secret", "private", "scheme", "bad-secret"],
)
@pytest.mark.parametrize("command", [("serve",), ("notifier",)], ids=["serve", "notifier"])
def test_a_bad_notify_setting_is_one_line(
    tmp_path: Path, env: dict[str, str], variable: str, words: str, command: tuple[str, ...]
) -> None:
    env = {"TRACKER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db", **env}
    assert words in refused(command, env, variable)
