"""Sending: the relay's sending half, a lane per subscription.

No database here: the relay (`relay.py`) claims deliveries before they come here, and the
recorder (`recorder.py`) records what they came to. Each subscription has a lane: its claimed
deliveries wait in order and at most TRACKER_NOTIFY_CONCURRENCY of them are sent at once, by
worker tasks that live while the lane has work, so a slow or dead receiver holds only its own
slots. Every result goes to the recorder, whose bound on results awaiting their commit pauses
the lanes behind a slow database. Each request is `post.send`, made here or, with the courier
(`courier.py`), in a child process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from tracker.clock import Clock
from tracker.closing import HttpSession
from tracker.config import Settings
from tracker.errors import describe
from tracker.notify import courier
from tracker.notify.claims import Claimed
from tracker.notify.deliveries import webhook_id
from tracker.notify.egress import RecentVerdicts
from tracker.notify.post import AttemptResult, send, webhook_session

log = logging.getLogger(__name__)


def lane_slots(concurrency: int, *, courier_on: bool) -> int:
    """Deliveries a lane has under way at most: its concurrency, or with the courier
    `courier.AHEAD` times that (the courier sends its concurrency at once, and has the next at
    hand when a request ends)."""
    return concurrency * (courier.AHEAD if courier_on else 1)


class Results(Protocol):
    """Where results go (the recorder): `put` may wait, bounding results not yet committed."""

    async def put(self, claimed: Claimed, result: AttemptResult) -> None: ...

    def give_back(self, claimed: Claimed) -> None: ...


@dataclass
class Lane:
    """One subscription's deliveries in this process, in the order they were claimed."""

    waiting: deque[Claimed] = field(default_factory=deque)
    held: int = 0  # claimed and not finished: waiting, or being sent, or its result queued
    workers: int = 0
    gone: bool = False  # it answered 410: nothing more is sent until that is recorded
    asked: bool = False  # it asked the relay for more since its last dispatch


class Sender:
    """The relay's sending half in one process: `dispatch()` what a turn claimed; each lane
    sends within its subscription's concurrency, hands results to `results`, and wakes the
    relay once its queue is half empty (`low_water`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        send_margin: timedelta,
        results: Results,
        wake: Callable[[], None],
        stopping: Callable[[], bool],
        low_water: Callable[[int], int],
        give_way: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.clock = clock
        # A delivery is sent only while its lease outlasts the request by this much (the
        # address check before the request is not under its timeout).
        self.send_margin = send_margin
        self.results = results
        self._wake = wake  # the relay: a lane wants more
        self._stopping = stopping
        self._low_water = low_water  # a lane holding this many or fewer asks for more
        self._give_way = give_way  # before each request: callbacks first (the relay's)
        self.timeout = settings.notify_timeout.total_seconds()
        self.allow_private = settings.notifies_private
        self.http = HttpSession(lambda: webhook_session(self.allow_private))
        self.verdicts = RecentVerdicts()
        self.courier = (
            courier.Courier(
                time_limit=self.timeout,
                concurrency=settings.notify_concurrency,
                allow_private=self.allow_private,
            )
            if settings.notify_courier == "on"
            else None
        )
        self.slots = lane_slots(settings.notify_concurrency, courier_on=self.courier is not None)
        self.lanes: dict[int, Lane] = {}
        self._workers: set[asyncio.Task[None]] = set()

    @property
    def sending(self) -> bool:
        """Whether some delivery is being sent or waits for a slot."""
        return bool(self._workers)

    def held(self, sub: int) -> int:
        lane = self.lanes.get(sub)
        return 0 if lane is None else lane.held

    @property
    def held_total(self) -> int:
        return sum(lane.held for lane in self.lanes.values())

    def dispatch(self, claimed: Sequence[Claimed]) -> None:
        touched: set[int] = set()
        for item in claimed:
            lane = self.lanes.get(item.subscription_id)
            if lane is None:
                lane = self.lanes[item.subscription_id] = Lane()
            lane.waiting.append(item)
            lane.held += 1
            lane.asked = False
            touched.add(item.subscription_id)
        for sub in touched:
            lane = self.lanes[sub]
            for _ in range(min(self.slots - lane.workers, len(lane.waiting))):
                lane.workers += 1
                task = asyncio.create_task(self._work(sub, lane))
                self._workers.add(task)
                task.add_done_callback(self._workers.discard)

    def recorded_gone(self, subs: Sequence[int]) -> None:
        """These subscriptions' 410 is recorded (they are disabled, what they had pending
        skipped): a lane may send for them again if they are enabled again."""
        for sub in subs:
            lane = self.lanes.get(sub)
            if lane is not None:
                lane.gone = False
            if self.courier is not None:
                self.courier.resume(sub)

    async def drain(self, grace: float) -> None:
        """Let the sends under way finish, for up to `grace` seconds, giving back what waits;
        cancel the rest (their leases expire and another turn sends them again)."""
        if self._workers:
            _, late = await asyncio.wait(set(self._workers), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def close(self) -> None:
        await self.http.close()
        if self.courier is not None:
            await self.courier.close()

    async def _send(self, item: Claimed) -> courier.Handed:
        msg_id, now = webhook_id(item.seq), self.clock()
        if self.courier is not None:
            left = item.lease_until - now - self.send_margin
            sub = item.subscription_id
            return await self.courier.hand(
                sub, item.url, item.secrets, msg_id, item.body, now, left
            )
        return await send(
            self.http(),
            item.url,
            item.secrets,
            msg_id,
            item.body,
            now,
            time_limit=self.timeout,
            allow_private=self.allow_private,
            verdicts=self.verdicts,
        )

    async def _work(self, sub: int, lane: Lane) -> None:
        """Send the lane's deliveries one after another until it is empty; as many of these
        run as the subscription's concurrency allows.

        A delivery is sent only while its lease outlasts the request's timeout: one that
        waited too long goes back to pending unsent, so no other process can take it while this
        one is sending it. After a 410 the rest is dropped: recording the 410 disables the
        subscription and skips them."""
        limit = self.settings.notify_timeout + self.send_margin
        try:
            while lane.waiting:
                item = lane.waiting.popleft()
                await self._give_way()
                if lane.gone:
                    lane.held -= 1
                    continue
                if self._stopping() or item.lease_until - self.clock() < limit:
                    lane.held -= 1
                    self.results.give_back(item)
                    continue
                try:
                    result = await self._send(item)
                except Exception as exc:  # send() catches what the network does: a bug
                    log.exception("relay: delivery %s", item.id)
                    result = AttemptResult(None, 0.0, error=f"internal error: {describe(exc)}")
                if result == "given back":  # the courier's slot came too late for its lease
                    lane.held -= 1
                    self.results.give_back(item)
                    continue
                if result == "dropped":  # after the subscription's 410, as above
                    lane.held -= 1
                    continue
                if result.gone:  # before the next request of this subscription starts
                    lane.gone = True
                await self.results.put(item, result)  # waits while too many await recording
                lane.held -= 1
                if not lane.asked and lane.held <= self._low_water(sub):
                    lane.asked = True
                    self._wake()
        finally:
            lane.workers -= 1
            if not lane.workers and not lane.held:
                self._wake()
