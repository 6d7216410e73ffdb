"""The relay: drains the change log into signed webhook deliveries.

A flow: it owns its transactions (fan-out, claim, record), each short, and makes every HTTP call
outside them. It runs inside `tracker serve` (TRACKER_NOTIFY=off turns it off) or alone as
`tracker notifier`; replicas share the work through leased delivery rows. Each subscription has
its own concurrency limit, so a slow or dead receiver holds only its own slots. It wakes when
this process commits a change (`wake`), on PostgreSQL when any replica does (LISTEN), when the
next delivery falls due, and at least every POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.clock import Clock, iso, utcnow
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import ConfigError, describe
from tracker.models import Subscription
from tracker.notify.changes import NOTIFY_CHANNEL
from tracker.notify.deliveries import (
    AttemptResult,
    Claimed,
    claim_due,
    count_disabled,
    due_subscriptions,
    fan_out,
    fan_out_pending,
    next_due,
    record_attempts,
    release,
    webhook_id,
)
from tracker.notify.egress import EgressRefused, GuardedResolver, check_url
from tracker.notify.signing import secret_key, webhook_headers
from tracker.notify.subscriptions import ensure_env_subscription, signing_secrets

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
MIN_TURN = 0.003  # seconds between turns at most, so a burst of commits costs few turns
READ_LIMIT = 64 * 1024  # bytes of a response read at most; the rest is never downloaded
# A lease outlives the request timeout by as much again (at most 30 s more), so a request still
# running is never leased twice, and a dead process's deliveries are taken again soon after.
LEASE_MARGIN = timedelta(seconds=30)
STOP_TIMEOUT = 10.0
# Deliveries claimed ahead per subscription: twice its concurrency at first and after any
# failure; doubled, up to MAX_AHEAD, after each turn that recorded only successes, so a quick
# receiver is fed by few turns while a slow or dead one holds few leases.
MAX_AHEAD = 512
CLAIM_BATCH = 64  # deliveries claimed per subscription per turn at most: turns stay short
USER_AGENT = "vod-ai-tracker-webhooks"
OWN_TURN = "tracker_relay_turn"  # marks the connection of the relay's own write


class Relay:
    """The relay of one process; `wake()` after committing changes."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        clock: Clock = utcnow,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.settings = settings
        self.database = database
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.claim_id = f"relay-{uuid.uuid4().hex[:12]}"
        # A claimed delivery may wait for one request of its subscription to end, then take its
        # own: its lease covers both, and a margin.
        self.lease = 2 * settings.notify_timeout + min(LEASE_MARGIN, settings.notify_timeout)
        # A delivery is sent only while its lease outlasts the request by this much (the
        # address check before the request is not under its timeout).
        self.send_margin = min(LEASE_MARGIN, settings.notify_timeout) / 2
        self._slots: dict[int, asyncio.Semaphore] = {}
        # Sent but not recorded yet, per subscription, at most twice its concurrency: all a
        # crash can make come twice.
        self._unrecorded: dict[int, asyncio.Semaphore] = {}
        self._gone: set[int] = set()  # subscriptions that answered 410 in this process
        self._undeclared = False  # TRACKER_NOTIFY_URL's subscription not written yet
        self.in_flight: dict[int, int] = defaultdict(int)  # claimed, not sent or given back yet
        self.queued: dict[int, int] = defaultdict(int)  # claimed, waiting for a slot
        self.ahead: dict[int, int] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._finished: list[tuple[Claimed, AttemptResult]] = []
        self._unsent: list[Claimed] = []  # its lease ran short, or the relay stopped, first
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the loop. A database that cannot be reached yet does not stop the service:
        the environment's subscription is declared by the first turn that reaches it."""
        if self.settings.notify_url:
            self.check_env_subscription()
            try:
                await self.declare_env_subscription()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("relay: TRACKER_NOTIFY_URL not declared yet: %s", describe(exc))
        self._http = http_session(self.settings)
        self._loop_ref = asyncio.get_running_loop()
        event.listen(self.database.writer.sync_engine, "commit", self._on_commit)
        self._stopped.clear()
        self._task = asyncio.create_task(self._loop())
        if not self.database.is_sqlite:
            await self._listen()

    def wake(self) -> None:
        self._wake.set()

    def _on_commit(self, _conn: Any) -> None:
        # Any write of this process may have committed changes; a turn that finds none costs
        # two indexed reads.
        if self._loop_ref is not None and not _conn.info.get(OWN_TURN):  # not our own writes
            self._loop_ref.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """Stop claiming, let the requests in flight finish (bounded), close the client."""
        self._stopped.set()
        self._wake.set()
        if event.contains(self.database.writer.sync_engine, "commit", self._on_commit):
            event.remove(self.database.writer.sync_engine, "commit", self._on_commit)
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sends:
            _, late = await asyncio.wait(set(self._sends), timeout=STOP_TIMEOUT)
            for task in late:
                task.cancel()  # its lease expires and another turn sends it again
            await asyncio.gather(*late, return_exceptions=True)
        if self._finished or self._unsent:
            with contextlib.suppress(Exception):
                await self.run_once()  # records what finished (claims nothing: stopped)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def check_env_subscription(self) -> None:
        if self.settings.notify_secret is None:
            raise ConfigError("TRACKER_NOTIFY_URL is set but TRACKER_NOTIFY_SECRET is not")
        secret_key(self.settings.notify_secret.get_secret_value())  # malformed: fail at start
        self._undeclared = True

    async def declare_env_subscription(self) -> None:
        url, secret = self.settings.notify_url, self.settings.notify_secret
        assert secret is not None
        allow = self.settings.notify_allow_private == "on"
        checked = await check_url(url, allow_private=allow)
        async with self.database.write() as session:
            await ensure_env_subscription(session, checked, secret.get_secret_value(), self.clock())
            metrics.SUBSCRIPTIONS_DISABLED.set(await count_disabled(session))
        self._undeclared = False

    async def _listen(self) -> None:
        """PostgreSQL: wake on NOTIFY from the trigger that numbers committed changes, so a
        change committed by another replica is sent within milliseconds."""
        import asyncpg  # PostgreSQL only

        url = self.database.url.set(drivername="postgresql")
        try:
            conn = await asyncpg.connect(url.render_as_string(hide_password=False))
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("relay: LISTEN failed (%s); polling every %ss", exc, self.poll_seconds)
            return
        self._listener = conn

    async def _loop(self) -> None:
        wait = 0.0
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            if self._stopped.is_set():
                break
            await asyncio.sleep(MIN_TURN)  # coalesce the wake-ups of a burst of commits
            try:
                wait = await self.run_once()
            except Exception as exc:  # keep going: the database may come back
                log.warning("relay: %s", describe(exc))
                wait = self.poll_seconds

    async def run_once(self) -> float:
        """One turn: record the attempts that finished, fan out new changes, claim what is due
        and start sending it, all in at most one write transaction; return how long to sleep
        (until the next delivery falls due, at most POLL_SECONDS)."""
        if self._undeclared:
            await self.declare_env_subscription()
        now = self.clock()
        finished, self._finished = self._finished, []
        unsent, self._unsent = self._unsent, []
        fanning, due = False, []
        if not (finished or unsent):
            async with self.database.session() as session:  # reads first: most turns stop here
                fanning = await fan_out_pending(session)
                due = await due_subscriptions(session, now)
        claimed: list[Claimed] = []
        if finished or unsent or fanning or due:
            self._adjust_ahead(finished)
            marked: dict[str, object] | None = None
            try:
                async with self.database.write() as session:
                    marked = (await session.connection()).info  # its commit wakes no one
                    marked[OWN_TURN] = True
                    statuses = await record_attempts(
                        session,
                        finished,
                        now,
                        schedule=self.settings.notify_retry_schedule,
                        disable_after=self.settings.notify_disable_after,
                    )
                    await release(session, unsent, now)
                    if unsent:
                        log.info("relay: %d deliveries given back unsent", len(unsent))
                    for status in statuses:
                        metrics.WEBHOOK_ATTEMPTS.labels(status).inc()
                    if any(status != "succeeded" for status in statuses):
                        metrics.SUBSCRIPTIONS_DISABLED.set(await count_disabled(session))
                    if finished or unsent:  # the reads skipped above
                        fanning = await fan_out_pending(session)
                    if fanning:
                        await fan_out(session, now)
                    if fanning or finished:
                        due = await due_subscriptions(session, now)
                    claimed = await self._claim(session, due, now)
            except Exception:
                # Not recorded: their leases expire and they are sent again (at least once).
                log.warning("relay: %d attempts not recorded", len(finished))
                raise
            finally:
                if marked is not None:
                    marked.pop(OWN_TURN, None)
                for item, _ in finished:  # recorded (or lost): their successors may be sent
                    self._unrecorded[item.subscription_id].release()
        for item in claimed:
            self.in_flight[item.subscription_id] += 1
            self.queued[item.subscription_id] += 1
            task = asyncio.create_task(self._deliver(item))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        if self._sends:
            return self.poll_seconds  # the sends wake the next turn when they need one
        async with self.database.session() as session:
            upcoming = await next_due(session)
        if upcoming is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, (upcoming - self.clock()).total_seconds()))

    async def _claim(self, session: AsyncSession, due: list[int], now: datetime) -> list[Claimed]:
        # Claimed ahead (see MAX_AHEAD), so a request starts as soon as another of its
        # subscription ends, without waiting for a turn of the database.
        claimed: list[Claimed] = []
        for sub in due:
            ahead = self.ahead.get(sub, self.base_ahead)
            slots = min(CLAIM_BATCH, ahead - self.in_flight[sub])
            # A queue at least half full is left alone: a claim costs a few statements.
            if 2 * self.in_flight[sub] <= ahead and slots > 0 and not self._stopped.is_set():
                claimed += await claim_due(session, sub, slots, now, self.lease, self.claim_id)
        return claimed

    @property
    def base_ahead(self) -> int:
        return 2 * self.settings.notify_concurrency

    def _adjust_ahead(self, finished: Sequence[tuple[Claimed, AttemptResult]]) -> None:
        healthy: dict[int, bool] = {}
        for item, result in finished:
            sub = item.subscription_id
            healthy[sub] = healthy.get(sub, True) and result.ok
        for sub, ok in healthy.items():
            grown = min(MAX_AHEAD, 2 * self.ahead.get(sub, self.base_ahead))
            self.ahead[sub] = max(self.base_ahead, grown) if ok else self.base_ahead

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
            assert self._http is not None
            async with slots:
                self.queued[sub] -= 1
                if sub in self._gone:
                    # It answered 410 meanwhile: recording that disables it and skips this.
                    self.in_flight[sub] -= 1
                    unrecorded.release()
                    return
                if (
                    self._stopped.is_set()
                    or claimed.lease_until - self.clock()
                    < self.settings.notify_timeout + self.send_margin
                ):
                    self.in_flight[sub] -= 1
                    unrecorded.release()
                    self._unsent.append(claimed)
                    self._wake.set()
                    return
                result = await send(
                    self._http,
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
        self._wake.set()


def http_session(settings: Settings) -> aiohttp.ClientSession:
    """The relay's client: no redirects (per request), no proxies from the environment, and a
    resolver that refuses forbidden addresses at connect time."""
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
    async with http_session(settings) as http:
        result = await send(http, settings, sub.url, signing_secrets(sub, now), msg_id, body, now)
    log.info("ping to subscription %s: %s", sub.id, result.status_code or result.error)
    return result


async def run_notifier(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """`tracker notifier`: run the relay without the HTTP service until SIGINT/SIGTERM."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    relay = Relay(settings, database)
    try:
        await relay.start()
        await stop.wait()
    finally:
        await relay.stop()
        await database.dispose()
