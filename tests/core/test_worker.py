"""The background worker base: wake-ups, a bounded stop, its logs; and the HTTP session holder."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest

from tracker.closing import HttpSession
from tracker.worker import Worker


class Turns(Worker):
    """Waits for a wake-up (or `poll` seconds), then takes a turn of `work` seconds."""

    def __init__(
        self, *, work: float = 0.0, poll: float = 30.0, grace: float = 10.0, tasks: int = 1
    ) -> None:
        super().__init__("turns", tasks=tasks, grace=grace)
        self.work = work
        self.poll = poll
        self.turns = 0
        self.finished = 0
        self.took_turn = asyncio.Event()
        self.torn_down = False

    async def run(self) -> None:
        while not self.stopping:
            await self.idle(self.poll)
            self.turns += 1
            self.took_turn.set()
            await asyncio.sleep(self.work)
            self.finished += 1

    async def teardown(self) -> None:
        self.torn_down = True


async def test_wake_ends_the_wait_and_a_wake_during_a_turn_is_kept() -> None:
    worker = Turns(work=0.05)
    await worker.start()
    try:
        worker.wake()
        await asyncio.wait_for(worker.took_turn.wait(), 5)
        worker.took_turn.clear()
        worker.wake()  # during the turn: the next idle() returns at once
        await asyncio.wait_for(worker.took_turn.wait(), 5)
        assert worker.turns == 2
    finally:
        await worker.stop()


async def test_stop_lets_the_turn_under_way_finish(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tracker.worker")
    worker = Turns(work=0.2, grace=5)
    await worker.start()
    worker.wake()
    await asyncio.wait_for(worker.took_turn.wait(), 5)
    await worker.stop()
    assert (worker.turns, worker.finished) == (1, 1)  # not cancelled mid-turn
    assert worker.torn_down
    assert [r.getMessage() for r in caplog.records] == ["turns started", "turns stopped"]


async def test_a_turn_past_the_grace_is_cancelled_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Turns(work=60, grace=0.1)
    await worker.start()
    worker.wake()
    await asyncio.wait_for(worker.took_turn.wait(), 5)
    started = time.monotonic()
    await worker.stop()
    assert time.monotonic() - started < 5
    assert worker.finished == 0
    assert worker.torn_down
    assert "turns: still busy after 0.1s; cancelled" in caplog.text


async def test_no_grace_cancels_at_once_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Turns(work=60, grace=0, tasks=3)
    await worker.start()
    worker.wake()
    await asyncio.wait_for(worker.took_turn.wait(), 5)
    await worker.stop()
    assert worker.finished == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_pause_ends_when_the_worker_stops() -> None:
    worker = Turns()
    pausing = asyncio.create_task(worker.pause(60))
    await asyncio.sleep(0)
    await worker.stop()  # never started: it still tears down
    await asyncio.wait_for(pausing, 5)
    assert worker.torn_down


async def test_a_task_that_dies_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Worker):
        async def run(self) -> None:
            raise RuntimeError("a bug")

    worker = Broken("broken")
    await worker.start()
    await asyncio.sleep(0.05)
    await worker.stop()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "broken: a task ended by an exception"
    assert record.exc_info is not None
    assert "a bug" in str(record.exc_info[1])


async def test_the_session_is_built_on_first_use_and_again_after_close() -> None:
    built: list[aiohttp.ClientSession] = []

    def build() -> aiohttp.ClientSession:
        built.append(aiohttp.ClientSession())
        return built[-1]

    holder = HttpSession(build)
    assert not holder.opened
    assert not built
    first = holder()
    assert holder() is first
    assert holder.opened
    await holder.close()
    assert first.closed
    assert not holder.opened
    async with holder:
        second = holder()
        assert second is not first
    assert second.closed
    assert len(built) == 2
