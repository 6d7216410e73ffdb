"""`tracker vod callback set|show --mns-endpoint --mns-queue` and `tracker mns status`, against
the simulator (VOD's Get/SetMessageCallback, the MNS queue API) and a live tracker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr

from tests.conftest import LiveServer
from tracker.app import create_app
from tracker.cli import main
from tracker.config import Settings
from tracker.fakevod import FakeVod, Faults

AK, SECRET = "LTAImnsCli", "MnsCliSecret"
QUEUE = "cli-events"


@pytest.fixture
async def fake() -> AsyncIterator[FakeVod]:
    vod = FakeVod(access_key_id=AK, access_key_secret=SECRET, faults=Faults(delay=0.05))
    await vod.start()
    yield vod
    await vod.stop()


async def cli(fake: FakeVod, *args: str, **env: str) -> Result:
    environment = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "TRACKER_VOD_ENDPOINT": fake.url,
        **env,
    }
    # The command runs its own event loop; the simulator keeps serving on this one.
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=environment)


async def test_set_aims_vod_at_the_queue_and_show_agrees(fake: FakeVod) -> None:
    fake.message_callback["EventTypeList"] = "FileUploadComplete"
    options = ["--mns-endpoint", fake.mns.url, "--mns-queue", QUEUE]
    before = await cli(fake, "vod", "callback", "show", *options)
    assert before.exit_code == 1, before.output
    assert "DIFF  CallbackType   HTTP" in before.output

    applied = await cli(fake, "vod", "callback", "set", "--yes", *options)
    assert applied.exit_code == 0, applied.output
    assert f"writes AI completion events to the MNS queue {QUEUE}" in applied.output
    assert fake.message_callback["CallbackType"] == "MNS"
    assert fake.message_callback["MnsEndpoint"] == fake.mns.url
    assert fake.message_callback["MnsQueueName"] == QUEUE
    assert fake.message_callback["EventTypeList"] == "FileUploadComplete,AIComplete"

    # The settings stand in for the options.
    env = {"TRACKER_MNS_ENDPOINT": fake.mns.url, "TRACKER_MNS_QUEUE": QUEUE}
    shown = await cli(fake, "vod", "callback", "show", **env)
    assert shown.exit_code == 0, shown.output
    assert "DIFF" not in shown.output
    again = await cli(fake, "vod", "callback", "set", "--yes", **env)
    assert "nothing to change" in again.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--mns-queue", QUEUE], "go together"),
        (["--mns-endpoint", "ftp://x", "--mns-queue", QUEUE], "--mns-endpoint"),
        (
            ["--mns-endpoint", "https://1.mns.cn-shanghai.aliyuncs.com", "--mns-queue", "a/b"],
            "--mns-queue",
        ),
    ],
)
async def test_set_refuses_bad_mns_options_before_calling_vod(
    fake: FakeVod, options: list[str], message: str
) -> None:
    result = await cli(fake, "vod", "callback", "set", "--yes", *options)
    assert result.exit_code == 2
    assert message in result.output
    assert fake.requests == 0  # refused before VOD was asked anything


async def test_mns_status_shows_depth_and_the_running_consumer(
    fake: FakeVod, database_url: str
) -> None:
    fake.mns.create_queue(QUEUE, VisibilityTimeout=30)
    await fake.mns.put(QUEUE, [json.dumps({"EventType": "FileUploadComplete", "VideoId": "v"})])
    settings = Settings(
        database_url=database_url,
        scheduler="off",
        mns_endpoint=fake.mns.url,
        mns_queue=QUEUE,
        mns_wait=1,
        access_key_id=AK,
        access_key_secret=SecretStr(SECRET),
    )
    env = {"TRACKER_MNS_ENDPOINT": fake.mns.url, "TRACKER_MNS_QUEUE": QUEUE}
    with LiveServer(create_app(settings)) as url:
        for _ in range(100):  # until the message is consumed
            if fake.mns.depth(QUEUE) == 0:
                break
            await asyncio.sleep(0.05)
        result = await cli(fake, "mns", "status", "--tracker-url", url, **env)
    assert result.exit_code == 0, result.output
    assert f"queue {QUEUE} at {fake.mns.url}:" in result.output
    assert "0 waiting, 0 received and not yet deleted" in result.output
    assert "  running since " in result.output
    assert "1 deleted" in result.output
    assert "1 stored" in result.output


async def test_mns_status_without_a_tracker_or_queue_exits_1(fake: FakeVod) -> None:
    env: dict[str, Any] = {"TRACKER_MNS_ENDPOINT": fake.mns.url, "TRACKER_MNS_QUEUE": "absent"}
    result = await cli(fake, "mns", "status", "--tracker-url", "http://127.0.0.1:9", **env)
    assert result.exit_code == 1
    assert "unreadable: QueueNotExist (HTTP 404)" in result.output
    assert "no tracker answering at http://127.0.0.1:9" in result.output
    missing = await cli(fake, "mns", "status")
    assert missing.exit_code == 1
    assert "TRACKER_MNS_ENDPOINT and TRACKER_MNS_QUEUE must be set" in missing.output
