"""Flows: the relay, which drains the change log into signed webhook deliveries.

Three parts, each owning what it writes. A turn of the relay (here) fans new changes out to every
subscription and claims what is due, set-based, in one short write transaction
(`deliveries.py`, `claims.py`), renders each change's body once, and dispatches the claims to the
sending half (`send.py`), which sends each subscription's deliveries within its own concurrency
outside any transaction. The recorder (`recorder.py`) writes what the attempts came to, for all
subscriptions at once, a commit every few milliseconds. On PostgreSQL the relay works through a
connection pool of its own, so the webhook's inbox never waits in a queue behind it. On SQLite it
shares the process's one writer connection: a second one would meet the inbox's in SQLite's busy
handler, which sleeps up to 100 ms between tries, where the writer's queue takes turns at once;
its transactions stay a few milliseconds long either way.

It runs inside `tracker serve` (TRACKER_NOTIFY=off turns it off), where it gives way to the
callbacks while their recording is at capacity (`give_way`), or alone as `tracker notifier`;
replicas share the work through leased delivery rows. It wakes when this process commits a change
(`wake`), on PostgreSQL when any replica does (LISTEN), when a lane runs low, when the next
delivery falls due, and at least every POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
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
from tracker.notify.changes import NOTIFY_CHANNEL
from tracker.notify.claims import (
    Claimed,
    Target,
    claim,
    due_targets,
    next_due,
    render_bodies,
    settle_pruned,
)
from tracker.notify.deliveries import (
    FannedOut,
    any_enabled,
    count_disabled,
    fan_out,
    fan_out_pending,
)
from tracker.notify.egress import EgressRefused, check_address, check_url, parse_url
from tracker.notify.recorder import QUIET, Finished, Recorder, quiet
from tracker.notify.send import Sender
from tracker.notify.signing import secret_key
from tracker.notify.subscriptions import SUBSCRIBED, ensure_env_subscription
from tracker.worker import Worker

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
MIN_TURN = 0.003  # seconds between turns at most, so a burst of commits costs few turns
# A lease outlives the request timeout by as much again (at most 30 s more), so a request still
# running is never leased twice, and a dead process's deliveries are taken again soon after.
LEASE_MARGIN = timedelta(seconds=30)
STOP_TIMEOUT = 10.0
# Deliveries claimed ahead per subscription: twice its concurrency at first and after any
# failure; doubled, up to MAX_AHEAD, after each commit that recorded only successes, so a quick
# receiver is fed by few turns while a slow or dead one holds few leases.
MAX_AHEAD = 1_024
CLAIM_BATCH = 512  # deliveries claimed per subscription per turn at most
CLAIM_TOTAL = 2_048  # and for all subscriptions: the claiming transaction stays short
# Deliveries held by all lanes together at most: what one process sends well within a lease.
# Without it a hundred quick subscriptions held a hundred thousand, sent a few a second each,
# and most went back unsent when their leases ran short, to be claimed again.
MAX_HELD = 4_096
BODIES_KEPT = 8_192  # rendered bodies kept: a change fanned out to many is rendered once
POOL_SIZE = 4  # the relay's own connections (PostgreSQL), beside the service's pool
FAN_OUT_WAIT = 0.05  # seconds before looking again while another replica fans out
ENV_RETRY = 10.0  # seconds between tries to declare TRACKER_NOTIFY_URL's subscription
# Inside `tracker serve`, callbacks come first: while their recording is at capacity (`busy`),
# the relay's turns and each send wait, looking every GIVE_WAY_STEP, GIVE_WAY_MAX at most, so
# a flood of callbacks is answered at the speed it would be without subscribers, and deliveries
# never starve (they go on at a trickle and catch up once the flood ends).
GIVE_WAY_STEP = 0.02
GIVE_WAY_MAX = 0.5


def check_notify_settings(settings: Settings) -> None:
    """TRACKER_NOTIFY_URL and TRACKER_NOTIFY_SECRET, checked at startup without the network:
    a ConfigError naming the variable. The URL's address is checked like any subscription's
    (when it is declared, and before every attempt): a name that does not resolve yet, or
    resolves to a refused address, never stops the service."""
    if not settings.notify_url:
        return
    allow = settings.notifies_private
    try:
        _, host, _ = parse_url(settings.notify_url)
        with contextlib.suppress(ValueError):  # a name: resolved later, by the relay
            check_address(host, str(ipaddress.ip_address(host.strip("[]"))), allow)
    except EgressRefused as exc:
        raise ConfigError(f"TRACKER_NOTIFY_URL: {exc.message.removeprefix('url: ')}") from None
    if settings.notify_secret is None:
        raise ConfigError("TRACKER_NOTIFY_URL is set but TRACKER_NOTIFY_SECRET is not")
    try:
        if not secret_key(settings.notify_secret.get_secret_value()):
            raise ValueError("empty")
    except ValueError:
        raise ConfigError(
            "TRACKER_NOTIFY_SECRET: not a signing secret (whsec_ and base64, as "
            "`POST /subscriptions` returns)"
        ) from None


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
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__("relay", grace=STOP_TIMEOUT)
        self.busy = busy  # whether this process records callbacks at capacity
        self._way_clear = asyncio.Event()  # cleared while a watcher sees `busy`
        self._way_clear.set()
        self._watcher: asyncio.Task[None] | None = None
        # With no enabled subscription a turn has nothing to do: until this (loop) time the
        # commits that wake the relay start none, so an idle relay costs a turn a poll, not one
        # per commit. A subscription written in this process ends it at once, elsewhere within
        # a poll.
        self._quiet_until = 0.0
        self._changed = False  # a commit of this process (not the relay's own) since the turn
        self.settings = settings
        self.database = database  # the process's: its commits wake the relay
        self.own: Database | None = None  # the relay's pools, while it runs
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.claim_id = f"relay-{uuid.uuid4().hex[:12]}"
        # A claimed delivery may wait for one request of its subscription to end, then take its
        # own: its lease covers both, and a margin.
        self.lease = 2 * settings.notify_timeout + min(LEASE_MARGIN, settings.notify_timeout)
        self.recorder: Recorder | None = None
        self.sender = Sender(
            settings,
            clock=clock,
            send_margin=min(LEASE_MARGIN, settings.notify_timeout) / 2,
            results=self,
            wake=self.wake,
            stopping=lambda: self.stopping,
            low_water=lambda sub: self.ahead.get(sub, self.base_ahead) // 2,
            give_way=self.give_way,
        )
        self._undeclared = bool(settings.notify_url)  # its subscription not written yet
        self._declare_after = 0.0
        self.ahead: dict[int, int] = {}
        self.bodies: OrderedDict[int, bytes] = OrderedDict()
        self._rotation = 0  # where the next turn starts handing out claims
        self._listener: Any = None
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    # The sender hands results here; the recorder exists while the relay runs.
    async def put(self, claimed: Claimed, result: Any) -> None:
        assert self.recorder is not None
        await self.recorder.put(claimed, result)

    def give_back(self, claimed: Claimed) -> None:
        assert self.recorder is not None
        self.recorder.give_back(claimed)

    async def setup(self) -> None:
        """A database or a subscriber that cannot be reached yet does not stop the service:
        the environment's subscription is declared by the first turn that can."""
        check_notify_settings(self.settings)
        self.own = self.database
        if not self.database.is_sqlite:
            self.own = Database(self.settings.database_url, pool_size=POOL_SIZE)
        self.recorder = Recorder(
            self.own,
            clock=self.clock,
            schedule=self.settings.notify_retry_schedule,
            disable_after=self.settings.notify_disable_after,
            on_recorded=self._recorded,
        )
        await self.recorder.start()
        if self._undeclared:
            with contextlib.suppress(EgressRefused, SQLAlchemyError, OSError):  # logged, retried
                await self.declare_env_subscription()
        self._loop_ref = asyncio.get_running_loop()
        event.listen(self.database.writer.sync_engine, "commit", self._on_commit)
        event.listen(self.database.writer.sync_engine, "rollback", self._on_rollback)
        if not self.database.is_sqlite:
            await self._listen()

    def _on_commit(self, conn: Any) -> None:
        # Any write of this process may have committed changes; a turn that finds none costs
        # two indexed reads. The relay's own writes commit none: they wake no one (quiet).
        if conn.info.pop(SUBSCRIBED, False):
            self._quiet_until = 0.0
        if conn.info.pop(QUIET, False):
            return
        self._changed = True  # the next turn fans out without looking first
        if self._loop_ref is not None:
            self._loop_ref.call_soon_threadsafe(self.wake)

    def _on_rollback(self, conn: Any) -> None:
        conn.info.pop(QUIET, None)
        conn.info.pop(SUBSCRIBED, None)

    async def teardown(self) -> None:
        """After the loop: let the requests in flight finish (bounded), record them, close."""
        for name, listener in (("commit", self._on_commit), ("rollback", self._on_rollback)):
            if event.contains(self.database.writer.sync_engine, name, listener):
                event.remove(self.database.writer.sync_engine, name, listener)
        if self._watcher is not None:
            await self._watcher  # it ends within a step of the stop
        await self.sender.drain(STOP_TIMEOUT)
        if self.recorder is not None:
            await self.recorder.stop()  # records what waits, then ends
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        await self.sender.close()
        if self.own is not None and self.own is not self.database:
            await self.own.dispose()
        self.own = None

    async def declare_env_subscription(self) -> None:
        """Write TRACKER_NOTIFY_URL's subscription. Its address is checked as any
        subscription's: refused or unresolvable, it is logged and tried again later (the
        service runs meanwhile); the attempts check it again before each request."""
        assert self.own is not None
        url, secret = self.settings.notify_url, self.settings.notify_secret
        assert url is not None
        assert secret is not None
        loop = asyncio.get_running_loop()
        if loop.time() < self._declare_after:
            return
        self._declare_after = loop.time() + ENV_RETRY
        allow = self.settings.notifies_private
        try:
            checked = await check_url(url, allow_private=allow)
            async with self.own.write() as session:
                await quiet(session)
                await ensure_env_subscription(
                    session, checked, secret.get_secret_value(), self.clock()
                )
                metrics.SUBSCRIPTIONS_DISABLED.set(await count_disabled(session))
        except EgressRefused as exc:
            log.warning(
                "relay: TRACKER_NOTIFY_URL not declared yet (retried in %gs): %s",
                ENV_RETRY,
                exc.message.removeprefix("url: "),
            )
            raise
        except (SQLAlchemyError, OSError) as exc:
            log.warning(
                "relay: TRACKER_NOTIFY_URL not declared yet (retried in %gs): %s",
                ENV_RETRY,
                describe(exc),
            )
            raise
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
        loop = asyncio.get_running_loop()
        while not self.stopping:
            await self.idle(wait)
            if self.stopping:
                break
            if (wait := self._quiet_until - loop.time()) > 0:
                continue
            await asyncio.sleep(MIN_TURN)  # coalesce the wake-ups of a burst of commits
            await self.give_way()
            try:
                wait = await self.run_once()
            except Exception as exc:  # keep going: the database may come back
                if not isinstance(exc, EgressRefused):
                    log.warning("relay: %s", describe(exc))
                wait = self.poll_seconds

    async def give_way(self) -> None:
        """While callbacks are recorded at capacity, wait (GIVE_WAY_MAX at most). The turn and
        every send share one watcher, which looks again every GIVE_WAY_STEP."""
        if self.stopping or not self.busy():
            return
        if self._way_clear.is_set():
            self._way_clear.clear()
            self._watcher = asyncio.create_task(self._watch())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GIVE_WAY_MAX):
                await self._way_clear.wait()

    async def _watch(self) -> None:
        try:
            while self.busy() and not self.stopping:  # nothing tells when it ends: look
                await self.pause(GIVE_WAY_STEP)
        finally:
            self._way_clear.set()

    async def run_once(self) -> float:
        """One turn: fan out new changes and claim what is due in at most one short write
        transaction, render the bodies not rendered yet, start sending; return how long to
        sleep (until the next delivery falls due, at most POLL_SECONDS)."""
        own = self.own
        assert own is not None
        if self._undeclared:
            with contextlib.suppress(EgressRefused):
                await self.declare_env_subscription()
        now = self.clock()
        full = [sub for sub in self.sender.lanes if self._slots(sub) <= 0]
        fanning, self._changed = self._changed, False
        targets: list[Target] = []
        if not fanning:  # reads first: most turns not started by a change stop here
            async with own.session() as session:
                fanning = await fan_out_pending(session)
                if not (fanning or self.stopping):
                    targets = await due_targets(session, now, full)
        rows: list[Any] = []
        bodies: dict[int, bytes] = {}
        fanned: FannedOut | None = FannedOut(0, more=False)
        if fanning or targets:
            async with own.write() as session:
                await quiet(session)
                if fanning:
                    fanned = await fan_out(session, now)
                    if not self.stopping:
                        targets = await due_targets(session, now, full)
                rows = await claim(session, self._wants(targets), now, self.lease, self.claim_id)
                bodies = await self._bodies(session, rows)
        if rows:
            await self._dispatch(rows, {t.id: t for t in targets}, bodies, now)
        if fanned is None:
            return FAN_OUT_WAIT  # another replica is fanning out
        if fanned.more or len(rows) >= CLAIM_TOTAL:
            return 0.0  # more is waiting right now
        if self.sender.sending:
            return self.poll_seconds  # the lanes wake the next turn when they run low
        async with own.session() as session:
            upcoming = await next_due(session)
            if upcoming is None and not await any_enabled(session):
                self._quiet_until = asyncio.get_running_loop().time() + self.poll_seconds
        if upcoming is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, (upcoming - self.clock()).total_seconds()))

    def _slots(self, sub: int) -> int:
        ahead = self.ahead.get(sub, self.base_ahead)
        held = self.sender.held(sub)
        # A queue at least half full is left alone: it has work until the next turn.
        return 0 if 2 * held > ahead else min(CLAIM_BATCH, ahead - held)

    def _wants(self, targets: Sequence[Target]) -> dict[int, int]:
        """How many to claim of each subscription: its free slots, CLAIM_TOTAL in all and no
        more than MAX_HELD held by all lanes, handed out from a point that moves each turn, so
        no subscription waits behind the others."""
        wants: dict[int, int] = {}
        left = min(CLAIM_TOTAL, MAX_HELD - self.sender.held_total)
        if targets:
            self._rotation = (self._rotation + 1) % len(targets)
        for target in [*targets[self._rotation :], *targets[: self._rotation]]:
            slots = min(self._slots(target.id), left)
            if slots > 0:
                wants[target.id] = slots
                left -= slots
        return wants

    async def _bodies(self, session: AsyncSession, rows: Sequence[Any]) -> dict[int, bytes]:
        """The bodies of the claimed rows' changes: kept ones, the rest rendered (one read); a
        change pruned meanwhile has none."""
        bodies: dict[int, bytes] = {}
        for seq in {row.change_seq for row in rows}:
            kept = self.bodies.get(seq)
            if kept is not None:
                bodies[seq] = kept
                self.bodies.move_to_end(seq)
        missing = {row.change_seq for row in rows} - bodies.keys()
        if missing:
            rendered = await render_bodies(session, missing)
            bodies |= rendered
            self.bodies.update(rendered)
            while len(self.bodies) > BODIES_KEPT:
                self.bodies.popitem(last=False)
        return bodies

    async def _dispatch(
        self,
        rows: Sequence[Any],
        targets: dict[int, Target],
        bodies: dict[int, bytes],
        now: datetime,
    ) -> None:
        """Start sending what was claimed; settle those whose change was pruned."""
        assert self.own is not None
        claimed: list[Claimed] = []
        pruned: list[int] = []
        lease_until = now + self.lease
        for row in rows:
            body = bodies.get(row.change_seq)
            if body is None:  # pruned meanwhile: nothing left to send
                pruned.append(row.id)
                continue
            target = targets[row.subscription_id]
            claimed.append(
                Claimed(
                    id=row.id,
                    subscription_id=target.id,
                    claim_id=self.claim_id,
                    attempts=row.attempts,
                    trigger=row.trigger,
                    url=target.url,
                    secrets=target.secrets,
                    seq=row.change_seq,
                    body=body,
                    lease_until=lease_until,
                )
            )
        if pruned:
            async with self.own.write() as session:
                await quiet(session)
                await settle_pruned(session, pruned, self.claim_id, now)
        self.sender.dispatch(claimed)

    def _recorded(self, finished: Sequence[Finished], disabled: Sequence[int]) -> None:
        """After each commit of the recorder: how far ahead to claim for each subscription."""
        healthy: dict[int, bool] = {}
        for item, result in finished:
            sub = item.subscription_id
            healthy[sub] = healthy.get(sub, True) and result.ok
        for sub, ok in healthy.items():
            grown = min(MAX_AHEAD, 2 * self.ahead.get(sub, self.base_ahead))
            self.ahead[sub] = max(self.base_ahead, grown) if ok else self.base_ahead
        if disabled:
            self.sender.recorded_gone(disabled)

    @property
    def base_ahead(self) -> int:
        return 2 * self.settings.notify_concurrency


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
