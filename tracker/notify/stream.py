"""Waiting for changes: the long-poll of `GET /jobs/{id}?wait=`, the SSE stream, and their caps.

A flow over short read sessions. One poller per database and process (`Waiters`) looks at the
change log every WAIT_POLL seconds while anyone waits, and wakes the long-polls of the jobs that
changed and the streams past whose cursor the log moved: one query per poll whatever the number
of waiters, instead of one per waiter (issue 23, P4: 800 waiters, each polling through the pool
the inbox writes through, slowed VOD's callbacks 200-fold). The log is shared, so a change
committed by any replica wakes the waiter within WAIT_POLL.

Held requests are capped per caller (its API token, or its address when the API is open) and in
all (TRACKER_WAIT_PER_CALLER, TRACKER_WAIT_MAX): beyond, `TooManyWaiting` (429, Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import weakref
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from tracker.db import Database
from tracker.errors import BadRequest, TrackerError
from tracker.models import JobChange

log = logging.getLogger(__name__)

MAX_WAIT = timedelta(seconds=60)  # Temporal answers "not yet" at about 60 s (reference 4)
WAIT_POLL = 0.1  # seconds between looks at the log while anyone waits
POLL_BATCH = 1000  # changes read per look; more are read at the next look at once
RETRY_AFTER = 5  # seconds a caller refused for too many held requests is told to wait
_WAIT = re.compile(r"(\d{1,4}(?:\.\d{1,3})?)(ms|s)?")


class TooManyWaiting(TrackerError):
    status_code = 429
    code = "too_many_waiting"
    headers = {"Retry-After": str(RETRY_AFTER)}


def parse_wait(raw: str | None) -> timedelta | None:
    """`wait=30s`, `30`, `1500ms`; at most MAX_WAIT; anything else is a 400."""
    if raw is None:
        return None
    match = _WAIT.fullmatch(raw.strip())
    if match is None:
        raise BadRequest("wait: a duration such as 30s or 1500ms", parameter="wait")
    value = float(match[1]) / (1000 if match[2] == "ms" else 1)
    wait = timedelta(seconds=value)
    if wait > MAX_WAIT:
        raise BadRequest(f"wait: at most {int(MAX_WAIT.total_seconds())}s", parameter="wait")
    return wait


def caller_key(token: str | None, address: str | None) -> str:
    """Whom a held request is counted against: its token (hashed: the count outlives no
    request, but a key should never hold a secret), else its address."""
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"address:{address or '?'}"


async def job_seq(database: Database, job_row_id: int) -> int:
    """The job's last committed change, 0 if none."""
    async with database.session() as session:
        found = await session.scalar(
            select(func.max(JobChange.seq)).where(JobChange.job_row_id == job_row_id)
        )
    return int(found or 0)


async def latest_change(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.max(JobChange.seq))) or 0)


class Waiters:
    """The held requests of one database in this process, and the one poller that wakes them."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.held: dict[str, int] = defaultdict(int)
        self.total = 0
        self.seen = -1  # the newest seq the poller has read; -1: not read yet
        self._jobs: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._moved = asyncio.Event()  # replaced after each wake-up: all streams wake
        self._streams = 0
        self._poller: asyncio.Task[None] | None = None
        self.polls = 0  # looks at the log, for tests

    @property
    def waiting(self) -> int:
        """Requests parked on the poller right now (long-polls and idle streams)."""
        return sum(len(events) for events in self._jobs.values()) + self._streams

    @contextlib.contextmanager
    def hold(self, key: str, per_caller: int, most: int) -> Iterator[None]:
        """Count one held request of `key` while the block runs; 429 beyond either cap."""
        if self.total >= most:
            raise TooManyWaiting(
                f"{self.total} requests are waiting for changes, the most this server holds "
                f"(TRACKER_WAIT_MAX); retry in {RETRY_AFTER}s or use the change feed"
            )
        if self.held[key] >= per_caller:
            raise TooManyWaiting(
                f"this caller holds {self.held[key]} requests waiting for changes, the most "
                f"allowed (TRACKER_WAIT_PER_CALLER); retry in {RETRY_AFTER}s"
            )
        self.held[key] += 1
        self.total += 1
        try:
            yield
        finally:
            self.held[key] -= 1
            self.total -= 1
            if not self.held[key]:
                del self.held[key]

    async def wait_for_job(self, job_row_id: int, after: int, wait: timedelta) -> bool:
        """True as soon as the job has a change past `after`; False when `wait` ran out. The
        poller only wakes it: the job's own change is what it checks, one query per wake."""
        deadline = time.monotonic() + wait.total_seconds()
        while True:
            mark = self.seen
            if await job_seq(self.database, job_row_id) > after:
                return True
            if self.seen != mark:  # the poller read the log meanwhile: a change may be in it
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            woken = asyncio.Event()
            self._jobs[job_row_id].add(woken)  # no await since the check: nothing is missed
            self._start()
            try:
                async with asyncio.timeout(remaining):
                    await woken.wait()
            except TimeoutError:
                return False
            finally:
                self._jobs[job_row_id].discard(woken)
                if not self._jobs[job_row_id]:
                    del self._jobs[job_row_id]

    async def wait_past(self, cursor: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return once the log has moved past `cursor` (as the poller saw it), or after
        `timeout` seconds, whichever is first."""
        if self.seen > cursor:
            return
        moved = self._moved
        self._start()
        self._streams += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await moved.wait()
        finally:
            self._streams -= 1

    def _start(self) -> None:
        if self._poller is None or self._poller.done():
            # A new poller starts from the newest change, not from where the last one stopped
            # (that backlog would only wake waiters for nothing); its first look wakes all.
            self.seen = -1
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def _idle(self) -> bool:
        return not self._jobs and not self._streams

    async def _poll(self) -> None:
        """Look at the log while anyone waits; then stop (the next waiter starts it again)."""
        while not self._idle():
            started = time.monotonic()
            try:
                await self._look()
            except (SQLAlchemyError, OSError) as exc:  # the waiters time out; keep trying
                log.warning("waiting for changes: the change log could not be read (%s)", exc)
            self.polls += 1
            await asyncio.sleep(max(0.0, WAIT_POLL - (time.monotonic() - started)))

    async def _look(self) -> None:
        if self.seen < 0:
            self.seen = await latest_change(self.database)
            # A waiter checked its job before registering: a change between that check and
            # this first read would be missed, so wake them all once to look again.
            self._wake(set(self._jobs))
            return
        async with self.database.session() as session:
            rows = (
                await session.execute(
                    select(JobChange.seq, JobChange.job_row_id)
                    .where(JobChange.seq > self.seen)
                    .order_by(JobChange.seq)
                    .limit(POLL_BATCH)
                )
            ).all()
        if rows:
            self.seen = int(rows[-1].seq)
            self._wake({int(r.job_row_id) for r in rows if r.job_row_id is not None})

    def _wake(self, job_rows: set[int]) -> None:
        for row in job_rows:
            for event in self._jobs.get(row, ()):
                event.set()
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()


_WAITERS: weakref.WeakKeyDictionary[Database, Waiters] = weakref.WeakKeyDictionary()


def waiters_of(database: Database) -> Waiters:
    """The one `Waiters` of `database` in this process."""
    found = _WAITERS.get(database)
    if found is None:
        found = _WAITERS[database] = Waiters(database)
    return found


async def wait_for_job_change(
    database: Database, job_row_id: int, after: int, wait: timedelta
) -> bool:
    """True as soon as the job has a change past `after`; False when `wait` ran out."""
    return await waiters_of(database).wait_for_job(job_row_id, after, wait)
