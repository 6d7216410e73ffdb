"""The official MNS SDK (`aliyun-mns-sdk` 1.3), unchanged, against the simulator's queue API
(mns-reference.md section 9), and the simulated VOD writing its events to a queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tracker.fakevod import FakeVod, Faults

AK, SECRET = "LTAI5tFakeMnsKey0001", "FakeMnsSecretForTheSimulator01"
EVENT = {"EventType": "AIVideoTagComplete", "JobId": "j1", "Data": "<&>\"' 测试"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeVod]:
    vod = FakeVod(access_key_id=AK, access_key_secret=SECRET, seed=7, faults=Faults(delay=0.05))
    await vod.start()
    yield vod
    await vod.stop()


@contextlib.contextmanager
def sdk_queue(url: str, name: str, secret: str = SECRET, token: str = "") -> Iterator[Any]:
    """The SDK's Queue; its kept-alive connection is closed afterwards."""
    from mns.account import Account

    queue = Account(url, AK, secret, security_token=token).get_queue(name)
    try:
        yield queue
    finally:
        queue.mns_client.close_connection()


def sdk_round_trip(url: str) -> dict[str, Any]:
    """Every call the issue names, in the SDK's own words; returns what it saw."""
    with sdk_queue(url, "sdk-events", token="an-sts-token") as queue:  # token sent, not signed
        return _round_trip(queue)


def _round_trip(queue: Any) -> dict[str, Any]:
    from mns.mns_exception import MNSServerException
    from mns.queue import Message, QueueMeta

    seen: dict[str, Any] = {}
    meta = QueueMeta()
    meta.set_visibilitytimeout(2)
    meta.set_polling_wait_seconds(0)
    queue.create(meta)
    queue.create(meta)  # the same attributes again: 204, still fine
    queue.set_encoding(False)  # raw bodies, as VOD writes them (7.2)

    sent = queue.send_message(Message(json.dumps(EVENT, ensure_ascii=False)))
    batch = queue.batch_send_message([Message(json.dumps({"n": n})) for n in range(20, 23)])
    seen["ids"] = [sent.message_id, *(m.message_id for m in batch)]
    seen["depth"] = queue.get_attributes().active_messages

    one = queue.receive_message(wait_seconds=1)
    seen["first"] = (one.message_body, one.dequeue_count)
    changed = queue.change_message_visibility(one.receipt_handle, 30)
    try:  # the old handle is spent once visibility changed (6)
        queue.delete_message(one.receipt_handle)
    except MNSServerException as exc:
        seen["spent"] = exc.type
    queue.delete_message(changed.receipt_handle)

    many = queue.batch_receive_message(16, wait_seconds=1)
    seen["batch"] = sorted(json.loads(m.message_body)["n"] for m in many)
    queue.batch_delete_message([m.receipt_handle for m in many])

    started = time.monotonic()
    try:  # an empty queue holds the long poll, then says MessageNotExist
        queue.batch_receive_message(16, wait_seconds=1)
    except MNSServerException as exc:
        seen["empty"] = (exc.type, time.monotonic() - started)
    return seen


# The SDK's own get_attributes fills its QueueMeta through setters it marks deprecated (1.3.0).
@pytest.mark.filterwarnings("ignore:Call to deprecated function:DeprecationWarning")
async def test_official_sdk_drives_every_queue_call(fake: FakeVod) -> None:
    seen = await asyncio.to_thread(sdk_round_trip, fake.mns.url)
    assert len(set(seen["ids"])) == 4
    assert seen["depth"] == 4
    assert seen["first"] == (json.dumps(EVENT, ensure_ascii=False), 1)
    assert seen["spent"] == "MessageNotExist"
    assert seen["batch"] == [20, 21, 22]
    code, waited = seen["empty"]
    assert code == "MessageNotExist"
    assert 0.9 <= waited < 3
    assert fake.mns.depth("sdk-events") == 0


def redelivery(url: str) -> tuple[int, int, str]:
    """A message not deleted within its visibility timeout comes back with DequeueCount + 1."""
    from mns.mns_exception import MNSServerException
    from mns.queue import Message, QueueMeta

    with sdk_queue(url, "redeliver") as queue:
        meta = QueueMeta()
        meta.set_visibilitytimeout(1)
        queue.create(meta)
        queue.send_message(Message("hello"))  # base64 on the wire, by the SDK's default
        first = queue.receive_message(wait_seconds=1)
        second = queue.receive_message(wait_seconds=3)  # waits out the visibility timeout
        try:
            queue.delete_message(first.receipt_handle)
            expired = "deleted"
        except MNSServerException as exc:
            expired = exc.type
        queue.delete_message(second.receipt_handle)
        assert second.message_body == b"hello"
    return first.dequeue_count, second.dequeue_count, expired


async def test_visibility_timeout_redelivers_and_expires_the_old_handle(fake: FakeVod) -> None:
    first, second, expired = await asyncio.to_thread(redelivery, fake.mns.url)
    assert (first, second, expired) == (1, 2, "MessageNotExist")


def refused(url: str) -> tuple[str, str]:
    from mns.mns_exception import MNSServerException

    codes = []
    for name, secret in (("nothing-here", SECRET), ("sdk-events", "wrong")):
        with sdk_queue(url, name, secret=secret) as queue:
            try:
                queue.receive_message()
            except MNSServerException as exc:
                codes.append(exc.type)
    return codes[0], codes[1]


async def test_missing_queue_and_wrong_secret_are_mns_errors(fake: FakeVod) -> None:
    fake.mns.create_queue("sdk-events")
    assert await asyncio.to_thread(refused, fake.mns.url) == (
        "QueueNotExist",
        "SignatureDoesNotMatch",
    )


def sdk_receive_events(url: str, queue_name: str, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with sdk_queue(url, queue_name) as queue:
        queue.set_encoding(False)
        while len(events) < count:
            for message in queue.batch_receive_message(16, wait_seconds=5):
                events.append(json.loads(message.message_body))
                queue.delete_message(message.receipt_handle)
    return events


async def test_set_message_callback_to_mns_routes_vod_events_to_the_queue(fake: FakeVod) -> None:
    from alibabacloud_tea_openapi.utils_models import Config
    from alibabacloud_vod20170321 import models
    from alibabacloud_vod20170321.client import Client

    fake.mns.create_queue("vod-events")
    port = int(fake.url.rsplit(":", 1)[1])
    config = Config(
        access_key_id=AK,
        access_key_secret=SECRET,
        region_id="cn-shanghai",
        endpoint=f"127.0.0.1:{port}",
        protocol="http",
    )
    vod = Client(config)
    request = models.SetMessageCallbackRequest(
        callback_type="MNS", mns_endpoint=fake.mns.url, mns_queue_name="vod-events"
    )
    await asyncio.to_thread(vod.set_message_callback, request)
    shown = await asyncio.to_thread(vod.get_message_callback, models.GetMessageCallbackRequest())
    assert shown.body.message_callback.callback_type == "MNS"
    assert shown.body.message_callback.mns_queue_name == "vod-events"

    submitted = await asyncio.to_thread(
        vod.submit_aijob, models.SubmitAIJobRequest(media_id="m1", types="AIVideoTag,AIMediaDNA")
    )
    ids = {job.job_id for job in submitted.body.aijob_list.aijob}
    await fake.idle(5)
    events = await asyncio.to_thread(sdk_receive_events, fake.mns.url, "vod-events", 2)
    assert {e["JobId"] for e in events} == ids
    assert {e["EventType"] for e in events} == {"AIVideoTagComplete", "AIMediaDNAComplete"}
    assert all(job.acknowledged == 1 for job in fake.jobs.values())
    assert fake.dropped == []
