"""The callback inbox: group-committed durable writes of callback events.

Requests hand their parsed event to `Inbox.record` and wait. Writer tasks take everything queued,
upsert it into `callback_events` in ONE statement and only then resolve each waiter, so a 200 is
never sent before its own row is committed, and a burst costs one commit per batch, not per
request. Applying events to jobs happens later, in `tracker.ingest.applier`, which the inbox owns.

A flow: the inbox owns its database transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tracker import metrics
from tracker.clock import Clock
from tracker.db import Database, db_time
from tracker.errors import describe
from tracker.ingest.applier import POLL_SECONDS, Applier
from tracker.ingest.pending import EVENTS

log = logging.getLogger(__name__)

# Events per statement. Small enough that with many concurrent senders the database commits one
# batch while the event loop prepares the next, instead of everyone waiting on one big commit.
MAX_BATCH = 32
HOLD_SECONDS = 0.1  # how long a writer keeps its connection while events keep coming
RECORDING_WINDOW = 0.1  # seconds since the last commit during which callbacks are arriving
# Recording is at capacity when callbacks flood in: more than BUSY_RATE a second (a decaying
# average over LOAD_SECONDS) and either faster than one commit each (the average batch, over the
# last few, holds CROWDED_BATCH or more events: on PostgreSQL the CPU runs out before the
# writers do) or with its writers busy more than BUSY_SHARE of the time; or when CROWDED_QUEUE
# events wait for a writer. A steady hundred a second commits one event at a time, now and then
# a few (on SQLite the applier, relay and recorder hold the one writer meanwhile) and keeps a
# writer busy a few percent of the time: none of that is capacity, and an applier that paused
# then made each callback wait hundreds of milliseconds to be visible.
BUSY_RATE = 500.0
CROWDED_BATCH = 3.0
BATCH_WEIGHT = 0.2  # of the newest batch in the average
BUSY_SHARE = 0.5
LOAD_SECONDS = 0.2
CROWDED_QUEUE = 8
# VOD gives up on a delivery after 5 s (vod-reference.md 6.5): answer 503 before that, so it
# retries, rather than letting it time out. A late commit is harmless: the retry is a duplicate.
STORE_TIMEOUT = 4.0


class StoreFailed(Exception):
    """The batch holding this event was not committed; the caller must not acknowledge it."""


@dataclass(frozen=True, slots=True)
class Recorded:
    new: bool  # False: the dedup key was already stored (a repeated delivery)


# The columns a request fills, in the order each row travels in the batch parameter.
COLUMNS = (
    "dedup_key",
    "event_type",
    "job_id",
    "media_id",
    "status",
    "event_time",
    "body",
    "headers",
    "received_at",
    "deliveries",
    "applied",
    "reason",
)
POSTGRES_CASTS = {"event_time": "timestamptz", "received_at": "timestamptz", "deliveries": "int"}
POSTGRES_CASTS |= {"applied": "boolean"}


UPSERT = (
    "ON CONFLICT (dedup_key) DO UPDATE "
    f"SET deliveries = {EVENTS.name}.deliveries + excluded.deliveries "
    "RETURNING dedup_key, deliveries"
)


def upsert_sql(dialect: str, rows: int = 1) -> str:
    """INSERT ... ON CONFLICT (dedup_key) DO UPDATE SET deliveries + n, for a batch.

    DO UPDATE rather than DO NOTHING: the row keeps how often VOD delivered the event (a retry
    means our 200 did not reach it), and RETURNING yields a row for duplicates too, which
    tells new from repeated without a read-before-write.

    PostgreSQL: the batch is ONE parameter, a JSON array of arrays (COLUMNS order) unpacked by
    the server, so the statement is fixed whatever the batch size (prepared once by asyncpg) and
    no row is type-processed in Python. SQLite: `rows` rows of plain VALUES, bound by the driver
    in C (one statement text per batch size, kept by sqlite3's statement cache): its json_each
    re-parsed each row's JSON once per column (SQLite 3.40 caches no parsed JSON), a fifth of
    the statement's CPU, and building the JSON cost twice what the parameters do.
    """
    names = ", ".join(COLUMNS)
    if dialect == "postgresql":
        values = ", ".join(
            "r -> 7" if name == "headers" else f"(r ->> {i})::{POSTGRES_CASTS.get(name, 'text')}"
            for i, name in enumerate(COLUMNS)
        )
        source = f"SELECT {values} FROM jsonb_array_elements($1::jsonb) AS r"
    else:
        row = "(" + ", ".join("?" * len(COLUMNS)) + ")"
        source = "VALUES " + ", ".join([row] * rows)
    return f"INSERT INTO {EVENTS.name} ({names}) {source} {UPSERT}"


# Compact, as PostgreSQL's jsonb and SQLite's json functions write JSON back.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def batch_json(rows: Sequence[tuple[dict[str, Any], int]], dialect: str) -> str:
    """PostgreSQL's batch parameter: each (row, deliveries) as an array in COLUMNS order."""
    return _COMPACT.encode(
        [
            [
                row["dedup_key"],
                row["event_type"],
                row["job_id"],
                row["media_id"],
                row["status"],
                db_time(row["event_time"], dialect),
                row["body"],
                row["headers"],
                db_time(row["received_at"], dialect),
                deliveries,
                row["applied"],
                row["reason"],
            ]
            for row, deliveries in rows
        ]
    )


def batch_values(rows: Sequence[tuple[dict[str, Any], int]]) -> list[Any]:
    """SQLite's batch parameters: each (row, deliveries) in COLUMNS order, one flat list."""
    values: list[Any] = []
    for row, deliveries in rows:
        values += (
            row["dedup_key"],
            row["event_type"],
            row["job_id"],
            row["media_id"],
            row["status"],
            db_time(row["event_time"], "sqlite"),
            row["body"],
            _COMPACT.encode(row["headers"]),
            db_time(row["received_at"], "sqlite"),
            deliveries,
            row["applied"],
            row["reason"],
        )
    return values


Pending = tuple[dict[str, Any], asyncio.Future[Recorded]]


class Inbox:
    """Owns the write queue, the writer tasks and the applier of one process."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock,
        confirm: bool = False,
        writers: int | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.database = database
        # SQLite has one writer connection; on PostgreSQL overlapping commits raise throughput.
        self.writers = writers or (1 if database.is_sqlite else 4)
        self.applier = Applier(
            database,
            clock=clock,
            busy=self.busy,
            recording=self.recording,
            confirm=confirm,
            poll_seconds=poll_seconds,
        )
        self._dialect = database.writer.dialect.name
        self._sql = upsert_sql(self._dialect)
        self._sqlite_sql: dict[int, str] = {}  # by batch size
        self._linger = not database.is_sqlite  # see _write_while_busy
        self._lingering: set[asyncio.Timeout] = set()  # writers waiting with a connection
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        # Each waiter's deadline, in arrival order (all share one timeout): see _expire_loop.
        # Only waiting futures stay in it, so none lives long enough to burden the GC.
        self._deadlines: dict[asyncio.Future[Recorded], float] = {}
        self._holding = 0  # writers holding a connection
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_write = float("-inf")
        self._load = 0.0  # seconds of writing, decayed by LOAD_SECONDS, per LOAD_SECONDS
        self._batch = 0.0  # events per batch, on average over the last few
        self._rate = 0.0  # events recorded, decayed by LOAD_SECONDS, per second
        self._closed = True
        self.batches = 0  # statements committed; for tests and diagnostics

    async def start(self) -> None:
        self._closed = False
        self._tasks = [asyncio.create_task(self._write_loop()) for _ in range(self.writers)]
        self._tasks.append(asyncio.create_task(self._expire_loop()))
        await self.applier.start()

    async def stop(self) -> None:
        """Refuse new events, let queued ones commit (bounded), then end the tasks."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 5.0)
        for lingering in self._lingering:  # nothing more will come: give the connections back
            lingering.reschedule(asyncio.get_running_loop().time())
        with contextlib.suppress(TimeoutError):  # until no writer holds a connection
            await asyncio.wait_for(self._idle.wait(), 5.0)
        for task in self._tasks:  # writers now wait on the empty queue: safe to cancel
            task.cancel()
        await self.applier.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(StoreFailed("shutting down"))

    async def record(self, row: dict[str, Any]) -> Recorded:
        """Return once `row` is committed to the inbox; raise StoreFailed if it was not, or
        not within STORE_TIMEOUT."""
        if self._closed:
            raise StoreFailed("inbox closed")
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, future))
        self._deadlines[future] = time.monotonic() + STORE_TIMEOUT
        try:
            return await future
        finally:
            self._deadlines.pop(future, None)

    async def _expire_loop(self) -> None:
        """Fail waiters not answered by their deadline: one task for all of them, since a timer
        per request costs more than the rest of the request's bookkeeping."""
        while True:
            await asyncio.sleep(min(0.25, STORE_TIMEOUT / 4))
            now = time.monotonic()
            for future, deadline in list(self._deadlines.items()):
                if deadline > now:
                    break
                del self._deadlines[future]
                if not future.done():
                    future.set_exception(StoreFailed("not committed in time"))

    def busy(self) -> bool:
        """Whether recording is at capacity, so the applier (and the relay) yield: see
        BUSY_RATE. The queue counts apart: the applier holds SQLite's one writer connection
        meanwhile, which neither batches nor a share of writing show."""
        if self._queue.qsize() >= CROWDED_QUEUE:
            return True
        if self.rate() < BUSY_RATE:
            return False
        return self._batch >= CROWDED_BATCH or self.load() > BUSY_SHARE

    def load(self) -> float:
        """The share of the recent time (LOAD_SECONDS) each writer spent writing, 0 to 1."""
        return self._load * self._decay() / self.writers

    def rate(self) -> float:
        """Events recorded a second, lately (LOAD_SECONDS)."""
        return self._rate * self._decay()

    def _decay(self) -> float:
        return math.exp(-(time.monotonic() - self._last_write) / LOAD_SECONDS)

    def _wrote(self, started: float, ended: float, events: int) -> None:
        self._batch += BATCH_WEIGHT * (events - self._batch)
        decay = math.exp(min(0.0, self._last_write - ended) / LOAD_SECONDS)
        self._load = self._load * decay + (ended - started) / LOAD_SECONDS
        self._rate = self._rate * decay + events / LOAD_SECONDS
        self._last_write = ended

    def recording(self) -> bool:
        """Whether callbacks are arriving: a batch was committed within RECORDING_WINDOW."""
        return time.monotonic() - self._last_write < RECORDING_WINDOW

    async def _write_loop(self) -> None:
        while True:
            taken = [await self._queue.get()]  # events taken from the queue, not yet answered
            self._holding += 1
            self._idle.clear()
            try:
                await self._write_while_busy(taken)
            except Exception as exc:  # no connection could be had (or given back)
                self._fail(taken, exc)
                for _ in taken:
                    self._queue.task_done()
            finally:
                self._holding -= 1
                if not self._holding:
                    self._idle.set()

    async def _write_while_busy(self, taken: list[Pending]) -> None:
        """Hold one connection while events keep coming (bounded), one statement per batch.

        The statement runs on the driver connection in autocommit: one INSERT is one atomic
        transaction, committed (fsynced) when it returns, in a single round trip (one hop to
        aiosqlite's thread) instead of BEGIN, INSERT, COMMIT and the pool's ping and reset.
        On PostgreSQL a writer also waits for the next event until the hold ends: several
        writers share a burst, so the queue is often empty for a moment, and each checkout
        pays the pool's ping (three round trips, a tenth of the process's CPU under load).
        SQLite's one writer connection is not kept idle: the applier and the API write on it.
        """
        async with self.database.writer.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            release_at = time.monotonic() + HOLD_SECONDS
            while taken:
                self._drain(taken)
                batch = taken[:]
                taken.clear()
                if not await self._write(driver, batch):
                    await conn.invalidate()  # a failed connection is not given back to the pool
                    return
                left = release_at - time.monotonic()
                if left <= 0:
                    return
                with contextlib.suppress(asyncio.QueueEmpty):
                    taken.append(self._queue.get_nowait())
                if not taken and self._linger and not self._closed:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left) as lingering:
                            self._lingering.add(lingering)
                            try:
                                taken.append(await self._queue.get())
                            finally:
                                self._lingering.discard(lingering)

    def _drain(self, batch: list[Pending]) -> None:
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _write(self, driver: Any, batch: list[Pending]) -> bool:
        started = time.monotonic()
        try:
            results = await self._store(driver, [row for row, _ in batch])
        except Exception as exc:  # any failure means: not committed
            self._fail(batch, exc)
            return False
        finally:
            for _ in batch:
                self._queue.task_done()
        self.batches += 1
        self._wrote(started, time.monotonic(), len(batch))
        self.applier.wake()
        answered: set[str] = set()
        for row, future in batch:
            key = row["dedup_key"]
            # Within a batch, the first delivery of a key is the one that may be new.
            result = results[key] if key not in answered else Recorded(new=False)
            answered.add(key)
            if not future.done():  # the client may have gone away meanwhile
                future.set_result(result)
        return True

    def _fail(self, batch: list[Pending], exc: Exception) -> None:
        log.warning("inbox write of %d events failed: %s", len(batch), describe(exc))
        for _, future in batch:
            if not future.done():
                future.set_exception(StoreFailed(describe(exc)))

    async def _store(self, driver: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Recorded]:
        # One row per dedup key (PostgreSQL refuses to upsert one row twice in a statement),
        # sorted so concurrent batches lock keys in the same order and cannot deadlock.
        merged: dict[str, tuple[dict[str, Any], int]] = {}
        for row in rows:
            key = row["dedup_key"]
            seen = merged.get(key)
            merged[key] = (row, 1) if seen is None else (seen[0], seen[1] + 1)
        batch = [merged[key] for key in sorted(merged)]
        if self._dialect == "postgresql":
            returned = await driver.fetch(self._sql, batch_json(batch, "postgresql"))  # asyncpg
        else:  # aiosqlite
            sql = self._sqlite_sql.get(len(batch)) or upsert_sql("sqlite", len(batch))
            self._sqlite_sql[len(batch)] = sql
            returned = await driver.execute_fetchall(sql, batch_values(batch))
        results: dict[str, Recorded] = {}
        repeated = 0
        for key, deliveries in returned:
            row, sent = merged[key]
            new = deliveries == sent
            results[key] = Recorded(new=new)
            repeated += deliveries - 1 if new else sent
            if new and row["applied"] is False:
                metrics.CALLBACKS_UNAPPLIED.labels(_label(row["reason"])).inc()
        if repeated:
            metrics.CALLBACKS_DUPLICATE.inc(repeated)
        if len(results) != len(merged):
            raise RuntimeError(f"stored {len(results)} of {len(merged)} events")
        return results


def _label(reason: str | None) -> str:
    return (reason or "unknown").split(":", 1)[0]
