"""The courier: the relay's requests made by a child process, to a receiver on loopback that
verifies them with the official library."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from tests.notify.receivers import Receiver
from tracker.notify.courier import Courier
from tracker.notify.post import AttemptResult
from tracker.notify.signing import new_secret

LEASE = timedelta(seconds=60)
BODY = b'{"type":"job.succeeded"}'


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver(secret=new_secret())
    await rx.start()
    yield rx
    await rx.stop()


@pytest.fixture
async def courier() -> AsyncIterator[Courier]:
    sender = Courier(time_limit=2.0, concurrency=1, allow_private=True)
    yield sender
    await sender.close()


async def hand(courier: Courier, rx: Receiver, msg_id: str, lease: timedelta = LEASE) -> object:
    assert rx.secret is not None
    return await courier.hand(1, rx.url, [rx.secret], msg_id, BODY, datetime.now(UTC), lease)


async def test_the_courier_sends_signed_and_gives_back_what_its_lease_cannot_cover(
    courier: Courier, receiver: Receiver
) -> None:
    sent = await hand(courier, receiver, "chg_1")
    assert isinstance(sent, AttemptResult)
    assert sent.status_code == 204
    assert [r.verified for r in receiver.received] == [True]
    assert receiver.received[0].headers["webhook-id"] == "chg_1"
    # A lease shorter than a request's time limit: never sent.
    assert await hand(courier, receiver, "chg_2", lease=timedelta(seconds=1)) == "given back"
    assert len(receiver.received) == 1


async def test_after_a_410_what_the_courier_holds_of_that_subscription_is_dropped(
    courier: Courier, receiver: Receiver
) -> None:
    async def gone_then_accept(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.2 if n == 0 else 0)  # the others wait for the slot meanwhile
        return web.Response(status=410 if n == 0 else 204)

    receiver.behaviour = gone_then_accept
    first, *rest = await asyncio.gather(*(hand(courier, receiver, f"chg_{n}") for n in range(3)))
    assert isinstance(first, AttemptResult)
    assert first.status_code == 410
    assert rest == ["dropped", "dropped"]
    assert len(receiver.received) == 1
    courier.resume(1)  # the 410 is recorded: the subscription may be sent to again
    again = await hand(courier, receiver, "chg_4")
    assert isinstance(again, AttemptResult)
    assert again.status_code == 204


async def test_a_courier_that_dies_fails_what_it_held_and_the_next_request_starts_another(
    courier: Courier, receiver: Receiver
) -> None:
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(1.5 if n == 0 else 0)
        return web.Response(status=204)

    receiver.behaviour = slow
    held = asyncio.create_task(hand(courier, receiver, "chg_1"))
    await receiver.wait_for(1)
    process = courier._process
    assert process is not None
    process.kill()
    lost = await held
    assert isinstance(lost, AttemptResult)
    assert lost.status_code is None
    assert lost.error is not None
    assert "courier exited" in lost.error
    again = await hand(courier, receiver, "chg_2")
    assert isinstance(again, AttemptResult)
    assert again.status_code == 204
    assert courier._process is not None
    assert courier._process.pid != process.pid


async def test_a_close_during_a_start_closes_the_child_it_started(
    courier: Courier, receiver: Receiver
) -> None:
    """A start waits out RESTART_EVERY after the last one: a close meanwhile must not leave the
    child that start makes running."""
    await hand(courier, receiver, "chg_1")
    first = courier._process
    assert first is not None
    reading = courier._reading
    assert reading is not None
    first.kill()
    await reading  # its reader saw it exit
    assert courier._process is None
    starting = asyncio.create_task(hand(courier, receiver, "chg_2"))
    await asyncio.sleep(0.1)  # inside the start, waiting out RESTART_EVERY
    await courier.close()
    await starting
    assert courier._process is None
    assert courier._reading is None


async def test_the_child_exits_when_its_input_closes() -> None:
    """As after its relay's kill -9: nobody is left to record what it would send."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker.notify.courier",
        "2",
        "8",
        "on",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    await asyncio.sleep(0.5)
    assert child.returncode is None
    child.stdin.close()
    assert await asyncio.wait_for(child.wait(), 30) == 0
