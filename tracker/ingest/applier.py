"""Flows: the applier, which turns stored callback events into job state, off the request path.

It takes inbox rows with `applied IS NULL` in arrival order, runs them through
`tracker.transitions` and records what happened on each row in the same transaction (the
statements are in `pending.py`). The inbox wakes it after each commit; it also polls, so a row
stored just before a crash is applied after the restart. Recording comes first: while callbacks
keep arriving it applies in short turns. `apply_pending` takes the database and commits one
transaction per batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from tracker import metrics
from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import describe
from tracker.ingest.pending import apply_events, set_aside, waiting_ids
from tracker.worker import Worker

log = logging.getLogger(__name__)

APPLY_BATCH = 500  # events per transaction: a few set-based statements, milliseconds
POLL_SECONDS = 2.0
# While callbacks are being recorded, the applier takes short turns (BUSY_BATCH events, a few ms:
# on SQLite recording waits for the one writer connection meanwhile), at once after each commit,
# so a job is visible within milliseconds of its callback's 200. Only when recording is at
# capacity (its writers mostly busy, or a crowd waiting for one: Inbox.busy) does it pause,
# BUSY_RATIO times as long as its turn took and at least MIN_BUSY_PAUSE: recording then keeps
# about nine tenths of the time, and a stream that never pauses is still applied as it comes
# (over a thousand events/s). The backlog of a burst is applied in full turns once it ends.
BUSY_BATCH = 64
BUSY_RATIO = 9.0
MIN_BUSY_PAUSE = 0.02
# A turn that waited out a stalled database (a lock, an outage) is not a measure of the work: 9x
# its length paused the applier for half a minute after the database came back.
MAX_BUSY_PAUSE = 0.5


class Applier(Worker):
    """The applier task of one process. `recording()` says whether callbacks are being recorded
    (short turns), `busy()` whether recording is at capacity (pause between them). Its stop lets the
    current turn finish (bounded): cancelling mid-query would strand a connection."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock,
        busy: Callable[[], bool],
        recording: Callable[[], bool] = lambda: False,
        confirm: bool = False,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        super().__init__("applier")
        self.database = database
        self.clock = clock
        self.busy = busy
        self.recording = recording
        self.confirm = confirm
        self.poll_seconds = poll_seconds

    async def run(self) -> None:
        pause = MIN_BUSY_PAUSE
        while not self.stopping:
            await self.idle(self.poll_seconds)
            try:
                while not self.stopping:
                    limit = APPLY_BATCH
                    if self.recording():
                        limit = BUSY_BATCH
                        if self.busy():
                            await self.pause(pause)
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
                await self.pause(self.poll_seconds)


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
            return await apply_events(session, now, confirm, limit)
    except Exception as exc:
        if is_disconnect(exc):
            raise
        log.warning("applying a batch failed (%s); retrying one by one", describe(exc))
    async with database.session() as session:
        ids = await waiting_ids(session, limit)
    for event_id in ids:
        try:
            async with database.write() as session:
                await apply_events(session, now, confirm, 1, only=event_id)
        except Exception as exc:
            if is_disconnect(exc):
                raise
            await _set_aside(database, event_id, now, exc)
    return len(ids)


async def _set_aside(database: Database, event_id: int, now: datetime, exc: Exception) -> None:
    """Store an event that raised twice as not applied, so it cannot block the queue."""
    async with database.write() as session:
        await set_aside(session, event_id, now, f"apply_error: {type(exc).__name__}")
    log.error("callback event %s set aside: %s", event_id, describe(exc))
    metrics.CALLBACKS_UNAPPLIED.labels("apply_error").inc()


def is_disconnect(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or "connect" in str(exc.orig).lower()
    return isinstance(exc, OSError | ConnectionError | TimeoutError)
