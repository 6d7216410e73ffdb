"""Sending: signed webhook POSTs, and the relay's sending half (per-subscription limits).

No database here: the relay (`relay.py`) claims deliveries before they come here and records
what they came to after (`attempts.py`). `Sender` sends each claimed delivery within its
subscription's concurrency and keeps the results until a turn of the relay records them; at most
twice the concurrency of a subscription is sent and not recorded yet (all a crash can make come
twice). `send` is one POST that never raises.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import aiohttp

from tracker.clock import Clock, iso
from tracker.closing import HttpSession
from tracker.config import Settings
from tracker.errors import describe
from tracker.models import Subscription
from tracker.notify.attempts import AttemptResult
from tracker.notify.claims import Claimed
from tracker.notify.deliveries import webhook_id
from tracker.notify.egress import EgressRefused, GuardedResolver, check_url
from tracker.notify.signing import webhook_headers
from tracker.notify.subscriptions import signing_secrets

log = logging.getLogger(__name__)

READ_LIMIT = 64 * 1024  # bytes of a response read at most; the rest is never downloaded
USER_AGENT = "vod-ai-tracker-webhooks"


class Sender:
    """The relay's sending half in one process: `dispatch()` what a turn claimed; `take()` at
    the next turn what finished (to record) and what was given back unsent (to release), and
    call `recorded()` once those results are in the database (or lost)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        send_margin: timedelta,
        wake: Callable[[], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.clock = clock
        # A delivery is sent only while its lease outlasts the request by this much (the
        # address check before the request is not under its timeout).
        self.send_margin = send_margin
        self._wake = wake  # a turn is needed: results to record, or a delivery given back
        self._stopping = stopping
        self.http = HttpSession(lambda: webhook_session(settings))
        self._slots: dict[int, asyncio.Semaphore] = {}
        # Sent but not recorded yet, per subscription, at most twice its concurrency: all a
        # crash can make come twice.
        self._unrecorded: dict[int, asyncio.Semaphore] = {}
        self._gone: set[int] = set()  # subscriptions that answered 410 in this process
        self.in_flight: dict[int, int] = defaultdict(int)  # claimed, not sent or given back yet
        self.queued: dict[int, int] = defaultdict(int)  # claimed, waiting for a slot
        self._sends: set[asyncio.Task[None]] = set()
        self._finished: list[tuple[Claimed, AttemptResult]] = []
        self._unsent: list[Claimed] = []  # its lease ran short, or the relay stopped, first

    @property
    def sending(self) -> bool:
        """Whether some delivery is being sent or waits for a slot."""
        return bool(self._sends)

    @property
    def unrecorded(self) -> bool:
        """Whether results (or deliveries given back) wait for a turn."""
        return bool(self._finished or self._unsent)

    def dispatch(self, claimed: Sequence[Claimed]) -> None:
        for item in claimed:
            self.in_flight[item.subscription_id] += 1
            self.queued[item.subscription_id] += 1
            task = asyncio.create_task(self._deliver(item))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    def take(self) -> tuple[list[tuple[Claimed, AttemptResult]], list[Claimed]]:
        """What finished, and what was given back unsent, since the last `take()`."""
        finished, self._finished = self._finished, []
        unsent, self._unsent = self._unsent, []
        return finished, unsent

    def recorded(self, finished: Sequence[tuple[Claimed, AttemptResult]]) -> None:
        """These results are recorded (or lost): their subscriptions' next sends may start."""
        for item, _ in finished:
            self._unrecorded[item.subscription_id].release()

    async def drain(self, grace: float) -> None:
        """Let the sends under way finish, for up to `grace` seconds; cancel the rest (their
        leases expire and another turn sends them again)."""
        if self._sends:
            _, late = await asyncio.wait(set(self._sends), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def close(self) -> None:
        await self.http.close()

    async def _deliver(self, claimed: Claimed) -> None:
        """Send one delivery; its result is recorded by a later turn, with the others'.

        It is sent only while its lease outlasts the request's timeout: a delivery that
        waited too long for a slot goes back to pending unsent, so no other process can take
        it while this one is sending it."""
        sub = claimed.subscription_id
        concurrency = self.settings.notify_concurrency
        slots = self._slots.setdefault(sub, asyncio.Semaphore(concurrency))
        unrecorded = self._unrecorded.setdefault(sub, asyncio.Semaphore(2 * concurrency))
        await unrecorded.acquire()  # released by the turn that records this attempt
        try:
            async with slots:
                self.queued[sub] -= 1
                if sub in self._gone:
                    # It answered 410 meanwhile: recording that disables it and skips this.
                    self.in_flight[sub] -= 1
                    unrecorded.release()
                    return
                if (
                    self._stopping()
                    or claimed.lease_until - self.clock()
                    < self.settings.notify_timeout + self.send_margin
                ):
                    self.in_flight[sub] -= 1
                    unrecorded.release()
                    self._unsent.append(claimed)
                    self._wake()
                    return
                result = await send(
                    self.http(),
                    self.settings,
                    claimed.url,
                    claimed.secrets,
                    webhook_id(claimed.seq),
                    claimed.body,
                    self.clock(),
                )
                if result.gone:  # before the next request of this subscription starts
                    self._gone.add(claimed.subscription_id)
        except Exception as exc:  # send() catches what the network does; this is a bug
            log.exception("relay: delivery %s", claimed.id)
            result = AttemptResult(None, 0.0, error=f"internal error: {describe(exc)}")
        self.in_flight[sub] -= 1  # its slot is free; the result waits for a turn, leased
        self._finished.append((claimed, result))
        self._wake()


def webhook_session(settings: Settings) -> aiohttp.ClientSession:
    """The webhooks' client: no redirects (per request), no proxies from the environment, and
    a resolver that refuses forbidden addresses at connect time."""
    allow = settings.notify_allow_private == "on"
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow), limit=0, limit_per_host=settings.notify_concurrency * 2
    )
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
) -> AttemptResult:
    """One signed POST; whatever happens, an AttemptResult (never an exception)."""
    started = time.monotonic()

    def took() -> float:
        return (time.monotonic() - started) * 1000

    try:
        await check_url(url, allow_private=settings.notify_allow_private == "on")
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
    """Retry-After of a 429 or 503: seconds, or an HTTP date."""
    if response.status not in (429, 503):
        return None
    raw = response.headers.get("retry-after", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return timedelta(seconds=int(raw))
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(timedelta(), when - now)


async def send_ping(settings: Settings, sub: Subscription, now: datetime) -> AttemptResult:
    """`POST /subscriptions/{id}/test`: one signed `ping`, not recorded as a delivery."""
    payload = {"type": "ping", "timestamp": iso(now), "data": {"subscription_id": sub.id}}
    body = json.dumps(payload, separators=(",", ":")).encode()
    msg_id = f"ping_{uuid.uuid4().hex}"
    async with webhook_session(settings) as http:
        result = await send(http, settings, sub.url, signing_secrets(sub, now), msg_id, body, now)
    log.info("ping to subscription %s: %s", sub.id, result.status_code or result.error)
    return result
