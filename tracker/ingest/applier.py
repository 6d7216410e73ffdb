"""The applier: turns stored callback events into job state, off the request path.

It picks inbox rows with `applied IS NULL` in arrival order, runs them through
`tracker.transitions` and records what happened on each row in the same transaction. The inbox
wakes it after each commit; it also polls, so a row stored just before a crash is applied after
the restart. Recording comes first: while callbacks keep arriving it applies in short turns.

Flows: `apply_pending` takes the database and commits one transaction per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import describe
from tracker.ingest.events import not_to_apply, outcome_of
from tracker.models import FINAL, CallbackEvent, Job
from tracker.transitions import Applied, apply_outcomes, mark_pending_many

log = logging.getLogger(__name__)

EVENTS = cast(Table, CallbackEvent.__table__)
APPLY_BATCH = 500  # events per transaction: a few set-based statements, milliseconds
POLL_SECONDS = 2.0
# While callbacks keep arriving, the applier takes short turns (BUSY_BATCH events, a few ms: on
# SQLite recording waits for the one writer connection meanwhile) and pauses BUSY_RATIO times as
# long as each took, at least MIN_BUSY_PAUSE: recording keeps about nine tenths of the time, and a
# stream that never pauses is still applied as it comes (over a thousand events/s). The backlog
# of a burst is applied in full turns once it ends.
BUSY_BATCH = 64
BUSY_RATIO = 9.0
MIN_BUSY_PAUSE = 0.02
# A turn that waited out a stalled database (a lock, an outage) is not a measure of the work: 9x
# its length paused the applier for half a minute after the database came back.
MAX_BUSY_PAUSE = 0.5
# A turn starting this soon after the previous one ended belongs to a stream and pauses; an event
# after a quiet spell is applied at once (it waited the whole pause: ~100 ms at light load).
STREAM_GAP = 0.1


class Applier:
    """The applier task of one process; `busy()` tells it when recording is under load."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock,
        busy: Callable[[], bool],
        confirm: bool = False,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.database = database
        self.clock = clock
        self.busy = busy
        self.confirm = confirm
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopped.clear()
        self._task = asyncio.create_task(self._loop())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Let the current turn finish (bounded), then end. Cancelling mid-query would strand
        a connection."""
        if self._task is None:
            return
        self._stopped.set()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), 10.0)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _loop(self) -> None:
        pause = MIN_BUSY_PAUSE
        ended = float("-inf")  # when the last turn ended
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()
            try:
                while not self._stopped.is_set():
                    limit = APPLY_BATCH
                    streaming = time.monotonic() - ended < STREAM_GAP
                    if self.busy() and streaming:
                        await self._sleep(pause)
                        limit = BUSY_BATCH
                    started = time.monotonic()
                    done = await apply_pending(
                        self.database, self.clock(), confirm=self.confirm, limit=limit
                    )
                    ended = time.monotonic()
                    pause = min(MAX_BUSY_PAUSE, max(MIN_BUSY_PAUSE, (ended - started) * BUSY_RATIO))
                    if done < limit:
                        break
            except Exception as exc:  # keep going: the database may come back
                log.warning("applying callbacks failed: %s", describe(exc))
                await self._sleep(self.poll_seconds)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless stop() is called meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)


async def apply_pending(
    database: Database, now: datetime, *, confirm: bool = False, limit: int = APPLY_BATCH
) -> int:
    """Apply up to `limit` stored, not yet applied events in arrival order; return how many
    were looked at (fewer than `limit`: none are left).

    Each event is applied once: its row leaves `applied IS NULL` in the same transaction that
    changes the job. On PostgreSQL rows are claimed with FOR UPDATE SKIP LOCKED, so replicas
    share the work; the transitions are race-safe on their own. If a batch raises, its events
    are retried one by one, and one that raises again is stored as not applied with the error
    as reason, so it cannot block the others.
    """
    try:
        async with database.write() as session:
            return await _apply_batch(session, now, confirm, limit)
    except Exception as exc:
        if is_disconnect(exc):
            raise
        log.warning("applying a batch failed (%s); retrying one by one", describe(exc))
    async with database.session() as session:
        ids = list(
            await session.scalars(
                select(EVENTS.c.id)
                .where(EVENTS.c.applied.is_(None))
                .order_by(EVENTS.c.id)
                .limit(limit)
            )
        )
    for event_id in ids:
        try:
            async with database.write() as session:
                await _apply_batch(session, now, confirm, 1, only=event_id)
        except Exception as exc:
            if is_disconnect(exc):
                raise
            await _set_aside(database, event_id, now, exc)
    return len(ids)


async def _apply_batch(
    session: AsyncSession, now: datetime, confirm: bool, limit: int, only: int | None = None
) -> int:
    query = (
        select(
            EVENTS.c.id,
            EVENTS.c.event_type,
            EVENTS.c.job_id,
            EVENTS.c.media_id,
            EVENTS.c.status,
            EVENTS.c.event_time,
            EVENTS.c.body,
        )
        .where(EVENTS.c.applied.is_(None))
        .order_by(EVENTS.c.id)
        .limit(limit)
    )
    if only is not None:
        query = query.where(EVENTS.c.id == only)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    done: dict[tuple[bool, str], list[int]] = {}  # (applied, reason) -> event ids
    # Every event of the turn is applied, those of one job in arrival order: a round takes the
    # next event of each job, set-based, and events that can no longer change their job are
    # settled together (`_skip_moot`). Taking only the first event per job let one job's
    # backlog (thousands of forged EventTimes) hold up every callback stored after it.
    queues: dict[str, deque[Any]] = {}
    for row in rows:
        if (reason := not_to_apply(row)) is not None:
            done.setdefault((False, reason), []).append(row.id)
        else:
            queues.setdefault(row.job_id, deque()).append(row)
    earlier: dict[str, list[int]] = {}
    if confirm:
        # A mark records the status awaiting VOD's word (the last one wins) and never makes a
        # job final, so a job's last event of the turn decides and the earlier share its result.
        for job_id, queue in queues.items():
            earlier[job_id] = [row.id for row in list(queue)[:-1]]
            queues[job_id] = deque([queue[-1]])
    rounds = 0
    while queues:
        crowded = [job_id for job_id, queue in queues.items() if rounds or len(queue) > 1]
        if crowded:
            await _skip_moot(session, queues, crowded, done, older=not confirm)
        if not queues:
            break
        rounds += 1
        heads = [queue.popleft() for queue in queues.values()]
        outcomes = [outcome_of(row) for row in heads]
        if confirm:
            results = await mark_pending_many(session, outcomes, now)
        else:
            results = await apply_outcomes(session, outcomes, now)
        for row, result in zip(heads, results, strict=True):
            done.setdefault((result.changed, result.value), []).append(row.id)
            done[result.changed, result.value].extend(earlier.get(row.job_id, ()))
        queues = {job_id: queue for job_id, queue in queues.items() if queue}
    for (changed, reason), ids in done.items():  # one statement per distinct result, usually one
        await session.execute(
            update(EVENTS)
            .where(EVENTS.c.id.in_(ids))
            .values(applied=changed, applied_at=now, reason=reason)
        )
        if changed:
            metrics.CALLBACKS_APPLIED.inc(len(ids))
        else:  # the label is the reason's kind: a bounded set whatever the bodies say
            metrics.CALLBACKS_UNAPPLIED.labels(reason.split(":", 1)[0]).inc(len(ids))
    return len(rows)


async def _skip_moot(
    session: AsyncSession,
    queues: dict[str, deque[Any]],
    job_ids: list[str],
    done: dict[tuple[bool, str], list[int]],
    *,
    older: bool,
) -> None:
    """Settle without a round the queued events of `job_ids` that cannot change their job: all
    of a final job's, and (`older`) those older than the job's last outcome, as the state
    machine's guards would. So a job's backlog costs a statement or two, not one per event; the
    guards still decide for the events left at the head of each queue."""
    found = await session.execute(
        select(Job.job_id, Job.state, Job.event_time).where(Job.job_id.in_(job_ids))
    )
    for job_id, state, event_time in found:
        queue = queues.get(job_id or "")
        if queue is None:
            continue
        if state in FINAL:
            reason = Applied.ALREADY_FINAL.value
            done.setdefault((False, reason), []).extend(row.id for row in queue)
            queue.clear()
        elif older and event_time is not None:
            while queue and queue[0].event_time is not None and queue[0].event_time < event_time:
                done.setdefault((False, Applied.OLDER.value), []).append(queue.popleft().id)
        if not queue:
            del queues[job_id or ""]


async def _set_aside(database: Database, event_id: int, now: datetime, exc: Exception) -> None:
    """Store an event that raised twice as not applied, so it cannot block the queue."""
    async with database.write() as session:
        await session.execute(
            update(EVENTS)
            .where(EVENTS.c.id == event_id, EVENTS.c.applied.is_(None))
            .values(applied=False, applied_at=now, reason=f"apply_error: {type(exc).__name__}")
        )
    log.error("callback event %s set aside: %s", event_id, describe(exc))
    metrics.CALLBACKS_UNAPPLIED.labels("apply_error").inc()


def is_disconnect(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or "connect" in str(exc.orig).lower()
    return isinstance(exc, OSError | ConnectionError | TimeoutError)
