"""Flows: the relay, which drains the change log into signed webhook deliveries.

It owns its transactions, each short: a turn records what was sent (`attempts.py`), gives back
what was not, fans out new changes (`deliveries.py`) and claims what is due (`claims.py`), in one
write transaction; the sending half (`send.py`) makes every HTTP call outside it. It runs inside
`tracker serve` (TRACKER_NOTIFY=off turns it off) or alone as `tracker notifier`; replicas share
the work through leased delivery rows. Each subscription has its own concurrency limit, so a slow
or dead receiver holds only its own slots. It wakes when this process commits a change (`wake`),
on PostgreSQL when any replica does (LISTEN), when the next delivery falls due, and at least
every POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.clock import Clock, utcnow
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import ConfigError, describe
from tracker.notify.attempts import AttemptResult, record_attempts
from tracker.notify.changes import NOTIFY_CHANNEL
from tracker.notify.claims import Claimed, claim_due, due_subscriptions, next_due, release
from tracker.notify.deliveries import count_disabled, fan_out, fan_out_pending
from tracker.notify.egress import check_url
from tracker.notify.send import Sender
from tracker.notify.signing import secret_key
from tracker.notify.subscriptions import ensure_env_subscription
from tracker.worker import Worker

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
MIN_TURN = 0.003  # seconds between turns at most, so a burst of commits costs few turns
# A lease outlives the request timeout by as much again (at most 30 s more), so a request still
# running is never leased twice, and a dead process's deliveries are taken again soon after.
LEASE_MARGIN = timedelta(seconds=30)
STOP_TIMEOUT = 10.0
# Deliveries claimed ahead per subscription: twice its concurrency at first and after any
# failure; doubled, up to MAX_AHEAD, after each turn that recorded only successes, so a quick
# receiver is fed by few turns while a slow or dead one holds few leases.
MAX_AHEAD = 512
CLAIM_BATCH = 64  # deliveries claimed per subscription per turn at most: turns stay short
OWN_TURN = "tracker_relay_turn"  # marks the connection of the relay's own write


class Relay(Worker):
    """The relay of one process; `wake()` after committing changes. Its stop lets the turn
    under way and the requests in flight finish (bounded), records them, closes the client."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        clock: Clock = utcnow,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        super().__init__("relay", grace=STOP_TIMEOUT)
        self.settings = settings
        self.database = database
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.claim_id = f"relay-{uuid.uuid4().hex[:12]}"
        # A claimed delivery may wait for one request of its subscription to end, then take its
        # own: its lease covers both, and a margin.
        self.lease = 2 * settings.notify_timeout + min(LEASE_MARGIN, settings.notify_timeout)
        self.sender = Sender(
            settings,
            clock=clock,
            send_margin=min(LEASE_MARGIN, settings.notify_timeout) / 2,
            wake=self.wake,
            stopping=lambda: self.stopping,
        )
        self._undeclared = False  # TRACKER_NOTIFY_URL's subscription not written yet
        self.ahead: dict[int, int] = {}
        self._listener: Any = None
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    async def setup(self) -> None:
        """A database that cannot be reached yet does not stop the service: the environment's
        subscription is declared by the first turn that reaches it."""
        if self.settings.notify_url:
            self.check_env_subscription()
            try:
                await self.declare_env_subscription()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("relay: TRACKER_NOTIFY_URL not declared yet: %s", describe(exc))
        self._loop_ref = asyncio.get_running_loop()
        event.listen(self.database.writer.sync_engine, "commit", self._on_commit)
        if not self.database.is_sqlite:
            await self._listen()

    def _on_commit(self, _conn: Any) -> None:
        # Any write of this process may have committed changes; a turn that finds none costs
        # two indexed reads.
        if self._loop_ref is not None and not _conn.info.get(OWN_TURN):  # not our own writes
            self._loop_ref.call_soon_threadsafe(self.wake)

    async def teardown(self) -> None:
        """After the loop: let the requests in flight finish (bounded), record them, close."""
        if event.contains(self.database.writer.sync_engine, "commit", self._on_commit):
            event.remove(self.database.writer.sync_engine, "commit", self._on_commit)
        await self.sender.drain(STOP_TIMEOUT)
        if self.sender.unrecorded:
            with contextlib.suppress(Exception):
                await self.run_once()  # records what finished (claims nothing: stopped)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        await self.sender.close()

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
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("relay: LISTEN failed (%s); polling every %ss", exc, self.poll_seconds)
            return
        self._listener = conn

    async def run(self) -> None:
        wait = 0.0
        while not self.stopping:
            await self.idle(wait)
            if self.stopping:
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
        finished, unsent = self.sender.take()
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
                self.sender.recorded(finished)  # their successors may be sent
        self.sender.dispatch(claimed)
        if self.sender.sending:
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
        in_flight = self.sender.in_flight
        for sub in due:
            ahead = self.ahead.get(sub, self.base_ahead)
            slots = min(CLAIM_BATCH, ahead - in_flight[sub])
            # A queue at least half full is left alone: a claim costs a few statements.
            if 2 * in_flight[sub] <= ahead and slots > 0 and not self.stopping:
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
