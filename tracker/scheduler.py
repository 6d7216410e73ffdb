"""The scheduler: stale sweep, reconciliation with VOD, inbox retention; heartbeats and a lease.

Runs on APScheduler 3 (AsyncIOScheduler) inside `tracker serve`, or alone as `tracker scheduler`.
Every job is idempotent and safe with several replicas on one database: the sweep is one atomic
statement, reconciliation runs only on the replica holding the `reconcile` lease, retention and
replay are plain idempotent writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Update, case, delete, func, literal, or_, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.applier import APPLY_BATCH, apply_pending
from tracker.clock import Clock, utcnow
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import describe
from tracker.leases import acquire_lease, lease_holder, new_owner, release_lease
from tracker.models import UNFINISHED, UNFLAGGED_SQL, CallbackEvent, Heartbeat, Job
from tracker.reconcile import CONTRADICTED, reconcile_open_jobs
from tracker.transitions import Applied
from tracker.vod import JOB_TYPES, VodClient

log = logging.getLogger(__name__)

RECONCILE_LEASE = "reconcile"
SWEEP_LOCK = 0x7472_6B73_7765_6570  # PostgreSQL advisory lock key: "trksweep"
RETENTION_INTERVAL = timedelta(days=1)
# A job is late when it has not finished for two intervals and this much more.
LATE_SLACK = timedelta(minutes=1)
# Retention deletes in chunks so a large backlog never holds the (SQLite) writer for long.
DELETE_CHUNK = 5_000
MAX_DELETE_CHUNKS = 2_000
STOP_TIMEOUT = 10.0
FIRST_RUN_MAX = timedelta(minutes=1)


# --- the jobs' work -----------------------------------------------------------------------------


def stale_sweep(settings: Settings, now: datetime) -> Update:
    """The sweep's one UPDATE (see `flag_stale_jobs`)."""
    default = now - settings.stale_after
    cutoffs = {t: now - settings.stale_after_for(t) for t in JOB_TYPES}
    latest = max([default, *cutoffs.values()])
    where: list[Any] = [text(UNFLAGGED_SQL), Job.submitted_at < latest]
    if any(cutoff != default for cutoff in cutoffs.values()):
        when = {t: literal(c, Job.submitted_at.type) for t, c in cutoffs.items()}
        otherwise = literal(default, Job.submitted_at.type)
        where.append(Job.submitted_at < case(when, value=Job.type, else_=otherwise))
    return (
        update(Job)
        .where(*where)
        .values(stale=True, stale_at=now)
        .execution_options(synchronize_session=False)
    )


async def flag_stale_jobs(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """Flag unfinished jobs older than their type's threshold: `stale = true, stale_at = now`
    where not already stale; return how many were flagged.

    One set-based UPDATE for every threshold at once (per-type overrides through a CASE on the
    type). Its range `submitted_at < the latest cutoff` runs on the partial index
    `ix_jobs_unflagged`, which holds only unfinished, unflagged jobs, so the cost follows the rows
    in flight, not the table. Two replicas running it at once flag each job once: the second
    waits for the row lock and re-checks `NOT stale` (PostgreSQL) or runs after the first
    (SQLite's single writer). A flagged job that finishes is unflagged by `transition` and keeps
    `stale_at`.
    """
    if session.get_bind().dialect.name == "postgresql":
        # Replicas' sweeps take turns: two UPDATEs locking the same rows in different orders
        # (different plans) could deadlock. Released at commit.
        await session.execute(select(func.pg_advisory_xact_lock(SWEEP_LOCK)))
    result = await session.execute(stale_sweep(settings, now))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def count_stale(session: AsyncSession) -> int:
    query = select(func.count()).where(Job.stale == true(), Job.state.in_(UNFINISHED))
    return int(await session.scalar(query) or 0)


def _expired_events(before: datetime) -> Any:
    # Not applied yet (applied IS NULL) or awaiting VOD's confirmation: kept whatever their age,
    # so an acknowledged callback is never deleted unseen.
    return select(CallbackEvent.id).where(
        CallbackEvent.received_at < before,
        CallbackEvent.applied.is_not(None),
        or_(CallbackEvent.reason.is_(None), CallbackEvent.reason != Applied.PENDING.value),
    )


async def delete_old_events(database: Database, before: datetime) -> int:
    """Delete stored callbacks received before `before`; job rows are kept. Idempotent."""
    deleted = 0
    for _ in range(MAX_DELETE_CHUNKS):
        async with database.write() as session:
            chunk = _expired_events(before).limit(DELETE_CHUNK).scalar_subquery()
            result = await session.execute(
                delete(CallbackEvent)
                .where(CallbackEvent.id.in_(chunk))
                .execution_options(synchronize_session=False)
            )
        count = int(result.rowcount)  # type: ignore[attr-defined]
        deleted += count
        if count < DELETE_CHUNK:
            break
    return deleted


async def replay_events(
    database: Database, clock: Clock, *, since: datetime | None, confirm: bool
) -> Counter[str]:
    """Re-apply stored callbacks that were not applied (after a bug fix, say) through the
    webhook's own applier, `tracker.applier.apply_pending`; return what became of them.

    Callbacks awaiting VOD's confirmation or contradicted by it are left alone: replaying one
    must never apply an outcome VOD denied.
    """
    skip = (Applied.PENDING.value, CONTRADICTED)
    where = [
        CallbackEvent.applied.is_(False),
        or_(CallbackEvent.reason.is_(None), CallbackEvent.reason.not_in(skip)),
    ]
    if since is not None:
        where.append(CallbackEvent.received_at >= since)
    async with database.session() as session:
        ids = list(await session.scalars(select(CallbackEvent.id).where(*where)))
    tally: Counter[str] = Counter()
    for chunk in _chunks(ids, 500):
        async with database.write() as session:
            await session.execute(
                update(CallbackEvent)
                .where(CallbackEvent.id.in_(chunk), CallbackEvent.applied.is_(False))
                .values(applied=None, applied_at=None, reason=None)
                .execution_options(synchronize_session=False)
            )
        for _ in range(len(chunk) // APPLY_BATCH + 100):  # bounded; others may be queued too
            if await apply_pending(database, clock(), confirm=confirm) < APPLY_BATCH:
                break
        async with database.session() as session:
            rows = await session.execute(
                select(CallbackEvent.applied, CallbackEvent.reason).where(
                    CallbackEvent.id.in_(chunk)
                )
            )
            for applied, reason in rows:
                tally["applied" if applied else str(reason or "not applied yet")] += 1
    return tally


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- heartbeats ---------------------------------------------------------------------------------


async def record_start(session: AsyncSession, name: str, owner: str, now: datetime) -> None:
    """A run of `name` began; the previous run's finish, duration and summary stay visible."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Heartbeat).values(name=name, owner=owner, started_at=now)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Heartbeat.name],
            set_={"owner": stmt.excluded.owner, "started_at": stmt.excluded.started_at},
        )
    )


async def record_finish(
    session: AsyncSession,
    name: str,
    owner: str,
    started: datetime,
    now: datetime,
    *,
    duration: float,
    ok: bool,
    summary: str,
) -> None:
    """The run that began at `started` ended; a newer run (another replica's) is not overwritten."""
    await session.execute(
        update(Heartbeat)
        .where(Heartbeat.name == name, Heartbeat.owner == owner, Heartbeat.started_at == started)
        .values(finished_at=now, duration_s=duration, ok=ok, summary=summary[:2000])
    )


def job_intervals(settings: Settings) -> dict[str, timedelta]:
    return {
        "sweep": settings.sweep_interval,
        "reconcile": settings.reconcile_interval,
        "confirm": settings.confirm_interval,
        "retention": RETENTION_INTERVAL,
    }


# Most severe first: the overall status is the most severe of the jobs'.
SEVERITY = ("stuck", "late", "failing", "never", "running", "ok", "off")


async def scheduler_status(
    session: AsyncSession, settings: Settings, now: datetime
) -> dict[str, Any]:
    """Each scheduled job's last run, from the heartbeats every replica writes, judged against
    its interval: `stuck` (running for over two intervals), `late` (no finish for over two
    intervals), `failing` (last run raised), `never`, `running`, `ok`, `off`."""
    beats = {beat.name: beat for beat in await session.scalars(select(Heartbeat))}
    jobs: dict[str, Any] = {}
    for name, interval in job_intervals(settings).items():
        beat = beats.get(name)
        late_after = 2 * interval + LATE_SLACK
        if beat is None:
            off = (name == "reconcile" and not settings.has_vod_credentials) or (
                name == "confirm"
                and not (settings.has_vod_credentials and settings.confirms_callbacks)
            )
            jobs[name] = {"state": "off" if off else "never"}
            continue
        running = beat.finished_at is None or beat.finished_at < beat.started_at
        if running:
            state = "stuck" if now - beat.started_at > late_after else "running"
        elif beat.finished_at is not None and now - beat.finished_at > late_after:
            state = "late"
        else:
            state = "ok" if beat.ok else "failing"
        jobs[name] = {
            "state": state,
            "every_s": interval.total_seconds(),
            "owner": beat.owner,
            "started_at": beat.started_at.isoformat(),
            "finished_at": beat.finished_at.isoformat() if beat.finished_at else None,
            "duration_s": beat.duration_s,
            "ok": beat.ok,
            "summary": beat.summary,
        }
    lease = await lease_holder(session, RECONCILE_LEASE, now)
    return {
        "status": min((job["state"] for job in jobs.values()), key=SEVERITY.index),
        "jobs": jobs,
        "reconcile_lease": (
            {"owner": lease.owner, "expires_at": lease.expires_at.isoformat()} if lease else None
        ),
    }


# --- the scheduler ------------------------------------------------------------------------------


class Scheduler:
    """The scheduled jobs of one process, on its event loop.

    The job methods (`sweep`, `reconcile`, `retention`, `renew_lease`) can also be awaited
    directly, which is how tests drive them with an injected clock.
    """

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        vod: VodClient | None,
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
                "reconciliation off: no VOD credentials (set ALIBABA_CLOUD_ACCESS_KEY_ID and "
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET); the stale sweep and retention still run"
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
            "scheduler %s started: sweep every %s, reconcile %s, confirm %s, retention daily",
            self.owner,
            self.settings.sweep_interval,
            f"every {self.settings.reconcile_interval}" if self.vod else "off",
            f"every {self.settings.confirm_interval}" if "confirm" in every else "off",
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
        async with self.database.write() as session:
            flagged = await flag_stale_jobs(session, self.settings, self.clock())
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

    async def _retention(self) -> str:
        before = self.clock() - self.settings.event_retention
        deleted = await delete_old_events(self.database, before)
        return f"deleted {deleted} callback events received before {before.isoformat()}"

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
    vod = VodClient(settings) if settings.has_vod_credentials else None
    scheduler = Scheduler(settings, database, vod=vod)
    try:
        await scheduler.start()
        await stop.wait()
    finally:
        await scheduler.stop()
        if vod is not None:
            await vod.close()
        await database.dispose()
