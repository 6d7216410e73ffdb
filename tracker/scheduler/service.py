"""The scheduler: stale sweep, reconciliation with VOD, retention; heartbeats and a lease.

Runs on APScheduler 3 (AsyncIOScheduler) inside `tracker serve`, or alone as `tracker scheduler`.
Every job is idempotent and safe with several replicas on one database: the sweep flags only jobs
not flagged yet, reconciliation runs only on the replica holding the `reconcile` lease, retention
is a plain idempotent write. The work itself lives in `sweep`, `reconcile`, `retention` and
`heartbeats`; this module only runs it on time.

Flows: each job owns its transactions (the sweep's, the lease's, the heartbeats' around every
run) or runs a flow that does (reconcile, recover, retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.exc import SQLAlchemyError

from tracker import metrics
from tracker.clock import Clock, utcnow
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import describe
from tracker.scheduler.heartbeats import record_finish, record_start
from tracker.scheduler.leases import RECONCILE_LEASE, acquire_lease, new_owner, release_lease
from tracker.scheduler.reconcile import reconcile_open_jobs
from tracker.scheduler.recover import recover_lost_job_ids
from tracker.scheduler.retention import RETENTION_INTERVAL, delete_old_events, prune_changes
from tracker.scheduler.sweep import count_stale, sweep_stale_jobs
from tracker.vod import SOURCES_HINT, VodClients, vod_clients

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
FIRST_RUN_MAX = timedelta(minutes=1)


class Scheduler:
    """The scheduled jobs of one process, on its event loop.

    The job methods (`sweep`, `reconcile`, `recover`, `retention`, `renew_lease`) can be awaited
    directly, which is how tests drive them with an injected clock.
    """

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        vod: VodClients | None,
        clock: Clock = utcnow,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.vod = vod
        self.clock = clock
        self.owner = owner or new_owner()
        self._lease_until = 0.0  # monotonic time until which this process holds the lease
        self._aps: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[Any]] = set()

    def holds_lease(self) -> bool:
        return time.monotonic() < self._lease_until

    async def start(self) -> None:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # no line per job start
        if self.vod is None:
            log.warning(
                "reconciliation off: no VOD credentials (set %s); the stale sweep and retention "
                "still run",
                SOURCES_HINT,
            )
        aps = AsyncIOScheduler(timezone=UTC)
        # APScheduler runs on wall time whatever clock the jobs are given. First runs come one
        # interval (at most a minute) after start: a replica coming up (or a short-lived app
        # in a test) does not compete with the webhook for the database straight away.
        started = datetime.now(UTC)
        every: dict[str, tuple[Callable[[], Awaitable[None]], timedelta]] = {
            "sweep": (self.sweep, self.settings.sweep_interval),
            "retention": (self.retention, RETENTION_INTERVAL),
        }
        if self.vod is not None:
            every["lease"] = (self.renew_lease, self.settings.lease_ttl / 3)
            every["reconcile"] = (self.reconcile, self.settings.reconcile_interval)
            every["recover"] = (self.recover, self.settings.recover_interval)
            if self.settings.confirms_callbacks:
                every["confirm"] = (self.confirm, self.settings.confirm_interval)
        for name, (func_, interval) in every.items():
            aps.add_job(
                func_,
                "interval",
                seconds=max(interval.total_seconds(), 0.05),
                id=name,
                next_run_time=started + min(interval, FIRST_RUN_MAX),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        aps.start()
        self._aps = aps
        log.info(
            "scheduler %s started: sweep every %s, reconcile %s, confirm %s, recover %s, "
            "retention daily",
            self.owner,
            self.settings.sweep_interval,
            f"every {self.settings.reconcile_interval}" if self.vod else "off",
            f"every {self.settings.confirm_interval}" if "confirm" in every else "off",
            f"every {self.settings.recover_interval}" if self.vod else "off",
        )

    async def stop(self) -> None:
        """Let running jobs finish (bounded), stop the timers, hand the lease over."""
        if self._aps is not None:
            self._aps.pause()
            if self._running:
                _, late = await asyncio.wait(set(self._running), timeout=STOP_TIMEOUT)
                for task in late:
                    task.cancel()
            self._aps.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the loop's next turn
            self._aps = None
        if self._lease_until:
            self._lease_until = 0.0
            with contextlib.suppress(SQLAlchemyError, OSError):
                async with self.database.write() as session:
                    await release_lease(session, RECONCILE_LEASE, self.owner, self.clock())

    async def sweep(self) -> None:
        await self._run("sweep", self._sweep)

    async def reconcile(self) -> None:
        if await self._leading("reconcile"):
            await self._run("reconcile", self._reconcile)

    async def confirm(self) -> None:
        """Settle callbacks awaiting VOD's confirmation, more often than the full reconcile."""
        if await self._leading("confirm", quiet=True):
            await self._run("confirm", self._confirm, idle="checked 0 jobs")

    async def recover(self) -> None:
        """Look up jobs without a JobId by media (tracker/scheduler/recover.py)."""
        if await self._leading("recover"):
            await self._run("recover", self._recover, idle="looked up 0 media")

    async def _leading(self, name: str, *, quiet: bool = False) -> bool:
        """True if this process holds the reconcile lease (taking it if it is free)."""
        if self.vod is None:
            return False
        if not self.holds_lease():
            await self.renew_lease()
        if self.holds_lease():
            return True
        metrics.SCHEDULER_RUNS.labels(name, "skipped").inc()
        (log.debug if quiet else log.info)("%s: skipped, another replica holds the lease", name)
        return False

    async def retention(self) -> None:
        await self._run("retention", self._retention)

    async def renew_lease(self) -> None:
        """Take or renew the reconcile lease; on any failure, hold it only until it expires."""
        started = time.monotonic()
        try:
            async with self.database.write() as session:
                held = await acquire_lease(
                    session, RECONCILE_LEASE, self.owner, self.clock(), self.settings.lease_ttl
                )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("lease: renewal failed: %s", describe(exc))
            return
        had = self.holds_lease()
        # Counted from before the write, so we stop before the row says the lease is free.
        self._lease_until = started + self.settings.lease_ttl.total_seconds() if held else 0.0
        if held != had:
            log.info("lease: %s the reconcile lease as %s", "took" if held else "lost", self.owner)

    async def _sweep(self) -> str:
        flagged = await sweep_stale_jobs(self.database, self.settings, self.clock())
        async with self.database.session() as session:
            stale = await count_stale(session)
        metrics.STALE_JOBS.set(stale)
        return f"flagged {flagged} jobs stale ({stale} stale and unfinished in all)"

    async def _reconcile(self) -> str:
        assert self.vod is not None
        report = await reconcile_open_jobs(
            self.database, self.vod, self.settings, self.clock, keep_going=self.holds_lease
        )
        return str(report)

    async def _confirm(self) -> str:
        assert self.vod is not None
        report = await reconcile_open_jobs(
            self.database,
            self.vod,
            self.settings,
            self.clock,
            keep_going=self.holds_lease,
            only_pending=True,
        )
        return str(report)

    async def _recover(self) -> str:
        assert self.vod is not None
        report = await recover_lost_job_ids(
            self.database, self.vod, self.settings, self.clock, keep_going=self.holds_lease
        )
        return str(report)

    async def _retention(self) -> str:
        before = self.clock() - self.settings.event_retention
        deleted = await delete_old_events(self.database, before)
        pruned = await prune_changes(self.database, before)
        return (
            f"deleted {deleted} callback events received and {pruned} job changes made "
            f"before {before.isoformat()}"
        )

    async def _run(
        self, name: str, work: Callable[[], Awaitable[str]], *, idle: str | None = None
    ) -> None:
        """One run: heartbeat, work, one log line, metrics. Failures are logged, never raised.
        A frequent job's idle runs (summary starting with `idle`) log at DEBUG only."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        started = self.clock()
        began = time.monotonic()
        ok = False
        try:
            async with self.database.write() as session:
                await record_start(session, name, self.owner, started)
            summary = await work()
            ok = True
        except (SQLAlchemyError, OSError) as exc:
            summary = f"failed: {describe(exc)}"
        except Exception as exc:
            log.exception("%s: unexpected error", name)
            summary = f"failed: {describe(exc)}"
        finally:
            if task is not None:
                self._running.discard(task)
        duration = time.monotonic() - began
        quiet = ok and idle is not None and summary.startswith(idle)
        level = logging.ERROR if not ok else logging.DEBUG if quiet else logging.INFO
        log.log(level, "%s: %s (%.0f ms)", name, summary, duration * 1000)
        metrics.SCHEDULER_RUNS.labels(name, "ok" if ok else "error").inc()
        metrics.SCHEDULER_SECONDS.labels(name).set(duration)
        metrics.SCHEDULER_LAST_RUN.labels(name).set(self.clock().timestamp())
        try:
            async with self.database.write() as session:
                await record_finish(
                    session,
                    name,
                    self.owner,
                    started,
                    self.clock(),
                    duration=duration,
                    ok=ok,
                    summary=summary,
                )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("%s: heartbeat not recorded: %s", name, describe(exc))


async def run_scheduler(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """`tracker scheduler`: run the jobs without the HTTP service until SIGINT/SIGTERM."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    vod = vod_clients(settings)
    scheduler = Scheduler(settings, database, vod=vod)
    try:
        await scheduler.start()
        await stop.wait()
    finally:
        await scheduler.stop()
        if vod is not None:
            await vod.close()
        await database.dispose()
