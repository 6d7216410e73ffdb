"""Sending: signed webhook POSTs, and the relay's sending half (a lane per subscription).

No database here: the relay (`relay.py`) claims deliveries before they come here, and the
recorder (`recorder.py`) records what they came to. Each subscription has a lane: its claimed
deliveries wait in order and at most TRACKER_NOTIFY_CONCURRENCY of them are sent at once, by
worker tasks that live while the lane has work, so a slow or dead receiver holds only its own
slots. Every result goes to the recorder, whose bound on results awaiting their commit pauses
the lanes behind a slow database. `send` is one POST that never raises.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiohttp

from tracker.clock import Clock
from tracker.closing import HttpSession
from tracker.config import Settings
from tracker.errors import describe
from tracker.notify.attempts import MAX_RETRY_AFTER, AttemptResult
from tracker.notify.claims import Claimed
from tracker.notify.deliveries import webhook_id
from tracker.notify.egress import EgressRefused, GuardedResolver, RecentVerdicts, check_url
from tracker.notify.signing import webhook_headers

log = logging.getLogger(__name__)

READ_LIMIT = 64 * 1024  # bytes of a response read at most; the rest is never downloaded
USER_AGENT = "vod-ai-tracker-webhooks"


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
        self.http = HttpSession(lambda: webhook_session(settings))
        self.verdicts = RecentVerdicts()
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
        concurrency = self.settings.notify_concurrency
        for sub in touched:
            lane = self.lanes[sub]
            for _ in range(min(concurrency - lane.workers, len(lane.waiting))):
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
                    result = await send(
                        self.http(),
                        self.settings,
                        item.url,
                        item.secrets,
                        webhook_id(item.seq),
                        item.body,
                        self.clock(),
                        verdicts=self.verdicts,
                    )
                except Exception as exc:  # send() catches what the network does: a bug
                    log.exception("relay: delivery %s", item.id)
                    result = AttemptResult(None, 0.0, error=f"internal error: {describe(exc)}")
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


def webhook_session(settings: Settings) -> aiohttp.ClientSession:
    """The webhooks' client: no redirects (per request), no proxies from the environment, and
    a resolver that refuses forbidden addresses at connect time."""
    allow = settings.notify_allow_private == "on"
    # The lanes bound the requests (TRACKER_NOTIFY_CONCURRENCY per subscription), the pool does
    # not: a limit per host would make subscriptions on one host wait, inside their timeouts,
    # for each other's slow requests. Connections are kept alive and reused per receiver.
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow), limit=0, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"user-agent": USER_AGENT},
        trust_env=False,
        auto_decompress=False,
    )


async def send(
    http: aiohttp.ClientSession,
    settings: Settings,
    url: str,
    secrets: Sequence[str],
    msg_id: str,
    body: bytes,
    now: datetime,
    *,
    verdicts: RecentVerdicts | None = None,
) -> AttemptResult:
    """One signed POST; whatever happens, an AttemptResult (never an exception). The URL is
    checked first (`verdicts`: as recently as they keep)."""
    started = time.monotonic()

    def took() -> float:
        return (time.monotonic() - started) * 1000

    allow = settings.notify_allow_private == "on"
    try:
        if verdicts is None:
            await check_url(url, allow_private=allow)
        else:
            await verdicts.check(url, allow_private=allow)
    except EgressRefused as exc:
        return AttemptResult(None, took(), error=f"refused: {exc.message}")
    headers = webhook_headers(secrets, msg_id, int(now.timestamp()), body)
    timeout = aiohttp.ClientTimeout(total=settings.notify_timeout.total_seconds())
    try:
        async with http.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=timeout,
        ) as response:
            answer = await read_bounded(response)
            return AttemptResult(
                response.status,
                took(),
                body=answer.decode("utf-8", "replace").replace("\x00", ""),
                retry_after=retry_after(response, now),
            )
    except TimeoutError:
        return AttemptResult(None, took(), error="timeout")
    except (aiohttp.ClientError, OSError) as exc:
        return AttemptResult(None, took(), error=f"{type(exc).__name__}: {exc}"[:500])


async def read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """At most READ_LIMIT bytes of the body: a huge answer is cut, never held in memory."""
    chunks: list[bytes] = []
    size = 0
    while size < READ_LIMIT:
        chunk = await response.content.read(READ_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def retry_after(response: aiohttp.ClientResponse, now: datetime) -> timedelta | None:
    """Retry-After of a 429 or 503: seconds, or an HTTP date; at most MAX_RETRY_AFTER (a day)
    whatever the number or the date, and None when it is neither."""
    if response.status not in (429, 503):
        return None
    raw = response.headers.get("retry-after", "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit():
        # Any number of digits: clamped before timedelta sees it (it overflows past ~10^14 s).
        return timedelta(seconds=min(int(raw), int(MAX_RETRY_AFTER.total_seconds())))
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, OverflowError, IndexError):  # malformed, or out of range
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER, max(timedelta(), when - now))
