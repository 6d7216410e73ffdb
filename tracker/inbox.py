"""The callback inbox: group-committed durable writes, and the applier that turns events into state.

Requests hand their parsed event to `Inbox.record` and wait. Writer tasks take everything queued,
upsert it into `callback_events` in ONE transaction and only then resolve each waiter, so a 200 is
never sent before its own row is committed, and a burst costs one commit per batch, not per request.
Applying events to jobs happens later and elsewhere: the applier picks rows with `applied IS NULL`,
runs them through `tracker.transitions` and records what happened. It is woken after each commit
and also polls, so a row stored just before a crash is applied after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Insert,
    Table,
    Text,
    bindparam,
    column,
    func,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import metrics
from tracker.clock import Clock
from tracker.db import Database
from tracker.models import CallbackEvent
from tracker.transitions import Applied, Outcome, apply_outcome, mark_pending
from tracker.vod import parse_vod_time

log = logging.getLogger(__name__)

EVENTS = cast(Table, CallbackEvent.__table__)
# Bounds: a batch is one statement and one commit; an applier batch holds the writer briefly.
MAX_BATCH = 1000
APPLY_BATCH = 32
POLL_SECONDS = 2.0
# While callbacks keep arriving, recording comes first: the applier takes BUSY_BATCH events, then
# pauses BUSY_RATIO times as long as they took, and at least the minimum pause. On PostgreSQL that
# keeps pace with a steady stream at no measurable cost to ingest. On SQLite applying holds the one
# writer connection recording needs, and any applying during a burst was measured to cut ingest
# about tenfold, so there it waits 5 s between turns and catches up when the burst ends: a stream
# that never pauses for BUSY_WINDOW (20+ events/s) is applied only after it ends.
BUSY_BATCH = 8
BUSY_RATIO = 3.0
MIN_BUSY_PAUSE = {"sqlite": 5.0, "postgresql": 0.02}
BUSY_WINDOW = 0.05  # seconds since the last recorded batch during which ingest counts as busy


HOLD_SECONDS = 0.1  # how long a writer keeps its connection while events keep coming


class StoreFailed(Exception):
    """The batch holding this event was not committed; the caller must not acknowledge it."""


@dataclass(frozen=True, slots=True)
class Recorded:
    new: bool  # False: the dedup key was already stored (a repeated delivery)


# The columns a request fills; the writer sends a whole batch as ONE JSON parameter.
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
TIMES = ("event_time", "received_at")


Pending = tuple[dict[str, Any], asyncio.Future[Recorded]]


def upsert_statement(dialect: str) -> Insert:
    """INSERT ... SELECT FROM <batch as JSON> ON CONFLICT (dedup_key) DO UPDATE SET deliveries + n.

    One fixed statement whatever the batch size, compiled once and (on PostgreSQL) prepared
    once; the rows travel as one JSON array unpacked by the database (`jsonb_to_recordset`,
    SQLite's `json_each`), which costs far less than binding and type-processing each row.
    DO UPDATE rather than DO NOTHING: the row keeps how often VOD delivered the event (a retry
    means our 200 did not reach it), and RETURNING yields a row for duplicates too, which tells
    new from repeated without a read-before-write.
    """
    rows = bindparam("rows", type_=Text())
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        record = (
            func.jsonb_to_recordset(cast_(rows, JSONB))
            .table_valued(*(column(name, EVENTS.c[name].type) for name in COLUMNS))
            .render_derived(name="batch", with_types=True)
        )
        source = select(*(record.c[name] for name in COLUMNS))
        stmt = postgresql.insert(EVENTS)
    else:
        each = func.json_each(rows).table_valued("value")
        source = select(
            *(func.json_extract(each.c.value, literal_column(f"'$.{name}'")) for name in COLUMNS)
        ).where(true())  # SQLite needs a WHERE to parse INSERT ... SELECT ... ON CONFLICT
        stmt = sqlite.insert(EVENTS)
    upsert = stmt.from_select(list(COLUMNS), source)
    return upsert.on_conflict_do_update(
        index_elements=[EVENTS.c.dedup_key],
        set_={"deliveries": EVENTS.c.deliveries + upsert.excluded.deliveries},
    ).returning(EVENTS.c.dedup_key, EVENTS.c.deliveries)


def batch_json(rows: Sequence[dict[str, Any]], dialect: str) -> str:
    """The batch parameter: times as each database stores them (naive UTC text on SQLite)."""
    naive = dialect != "postgresql"
    out = []
    for row in rows:
        item = {name: row.get(name) for name in COLUMNS}
        for name in TIMES:
            when = item[name]
            if when is not None:
                when = when.astimezone(UTC)
                item[name] = when.replace(tzinfo=None).isoformat(" ") if naive else when.isoformat()
        if naive:  # SQLAlchemy's JSON type keeps serialised text in SQLite
            item["headers"] = json.dumps(item["headers"])
        out.append(item)
    return json.dumps(out, separators=(",", ":"))


class Inbox:
    """Owns the write queue, the writer tasks and the applier task of one process."""

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
        self.clock = clock
        self.confirm = confirm
        # SQLite has one writer connection; on PostgreSQL overlapping commits raise throughput.
        self.writers = writers or (1 if database.is_sqlite else 4)
        self.poll_seconds = poll_seconds
        self._min_pause = MIN_BUSY_PAUSE["sqlite" if database.is_sqlite else "postgresql"]
        self._busy_pause = self._min_pause
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._holding = 0  # writers holding a connection
        self._idle = asyncio.Event()
        self._idle.set()
        self._dialect = database.writer.dialect.name
        # The Core statement rendered once for the driver, with the batch as its one parameter.
        self._sql = str(
            upsert_statement(self._dialect).compile(
                dialect=database.writer.dialect, compile_kwargs={"literal_binds": False}
            )
        )
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_write = 0.0
        self._closed = True
        self._stopping = False
        self._stopped = asyncio.Event()
        self.batches = 0  # statements committed; for tests and diagnostics

    async def start(self) -> None:
        self._closed = self._stopping = False
        self._stopped.clear()
        self._tasks = [asyncio.create_task(self._write_loop()) for _ in range(self.writers)]
        self._tasks.append(asyncio.create_task(self._apply_loop()))

    async def stop(self) -> None:
        """Refuse new events, let queued ones commit (bounded), then end the tasks."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 5.0)
        writers, applier = self._tasks[:-1], self._tasks[-1]
        with contextlib.suppress(TimeoutError):  # until no writer holds a connection
            await asyncio.wait_for(self._idle.wait(), 5.0)
        for task in writers:  # now waiting on the empty queue: safe to cancel
            task.cancel()
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(applier), 10.0)
        applier.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(StoreFailed("shutting down"))

    async def record(self, row: dict[str, Any]) -> Recorded:
        """Return once `row` is committed to the inbox; raise StoreFailed if it was not."""
        if self._closed:
            raise StoreFailed("inbox closed")
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, future))
        return await future

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
        """
        async with self.database.writer.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            release_at = time.monotonic() + HOLD_SECONDS
            while taken:
                self._drain(taken)
                batch = taken[:]
                taken.clear()
                try:
                    ok = await self._write(driver, batch)
                finally:
                    for _ in batch:
                        self._queue.task_done()
                if not ok:
                    await conn.invalidate()  # a failed connection is not given back to the pool
                    return
                if time.monotonic() >= release_at:
                    return
                with contextlib.suppress(asyncio.QueueEmpty):
                    taken.append(self._queue.get_nowait())

    def _drain(self, batch: list[Pending]) -> None:
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _write(self, driver: Any, batch: list[Pending]) -> bool:
        try:
            results = await self._store(driver, [row for row, _ in batch])
        except Exception as exc:  # any failure means: not committed
            self._fail(batch, exc)
            return False
        self.batches += 1
        self._last_write = time.monotonic()
        self._wake.set()
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
        log.warning("inbox write of %d events failed: %s", len(batch), _describe(exc))
        for _, future in batch:
            if not future.done():
                future.set_exception(StoreFailed(_describe(exc)))

    async def _store(self, driver: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Recorded]:
        # One row per dedup key (PostgreSQL refuses to upsert one row twice in a statement),
        # sorted so concurrent batches lock keys in the same order and cannot deadlock.
        merged: dict[str, dict[str, Any]] = {}
        for row in rows:
            key = row["dedup_key"]
            if key in merged:
                merged[key]["deliveries"] += 1
            else:
                merged[key] = {**row, "deliveries": 1}
        payload = batch_json([merged[key] for key in sorted(merged)], self._dialect)
        if self._dialect == "postgresql":
            returned = await driver.fetch(self._sql, payload)  # asyncpg
        else:
            returned = await driver.execute_fetchall(self._sql, (payload,))  # aiosqlite
        results: dict[str, Recorded] = {}
        for key, deliveries in returned:
            sent = merged[key]
            new = deliveries == sent["deliveries"]
            results[key] = Recorded(new=new)
            metrics.CALLBACKS_DUPLICATE.inc(deliveries - 1 if new else sent["deliveries"])
            if new and sent["applied"] is False:
                metrics.CALLBACKS_UNAPPLIED.labels(_label(sent["reason"])).inc()
        if len(results) != len(merged):
            raise RuntimeError(f"stored {len(results)} of {len(merged)} events")
        return results

    def _busy(self) -> bool:
        return not self._queue.empty() or time.monotonic() - self._last_write < BUSY_WINDOW

    async def _apply_loop(self) -> None:
        # Ends only between batches (see stop): cancelling mid-query would strand a connection.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()
            try:
                while not self._stopping:
                    limit = APPLY_BATCH
                    if self._busy():
                        # Recording is what VOD waits for: during a burst apply a few events
                        # between pauses, and catch up in full when it ends.
                        await self._sleep(self._busy_pause)
                        limit = BUSY_BATCH
                    started = time.monotonic()
                    done = await apply_pending(
                        self.database, self.clock(), confirm=self.confirm, limit=limit
                    )
                    took = time.monotonic() - started
                    self._busy_pause = max(self._min_pause, took * BUSY_RATIO)
                    if done < limit:
                        break
                    await asyncio.sleep(0)
            except Exception as exc:  # keep going: the database may come back
                log.warning("applying callbacks failed: %s", _describe(exc))
                await self._sleep(self.poll_seconds)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless stop() is called meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)


async def apply_pending(
    database: Database, now: datetime, *, confirm: bool = False, limit: int = APPLY_BATCH
) -> int:
    """Apply up to `limit` stored, not yet applied events in arrival order; return how many.

    Each event is applied once: its row leaves `applied IS NULL` in the same transaction that
    changes the job. On PostgreSQL rows are claimed with FOR UPDATE SKIP LOCKED, so replicas
    share the work; `apply_outcome` is race-safe on its own. If a batch raises, its events are
    retried one by one, and one that raises again is stored as not applied with the error as
    reason, so it cannot block the others.
    """
    try:
        async with database.write() as session:
            return len(await _apply_batch(session, now, confirm, limit))
    except Exception as exc:
        if _is_disconnect(exc):
            raise
        log.warning("applying a batch failed (%s); retrying one by one", _describe(exc))
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
            if _is_disconnect(exc):
                raise
            await _set_aside(database, event_id, now, exc)
    return len(ids)


async def _apply_batch(
    session: AsyncSession, now: datetime, confirm: bool, limit: int, only: int | None = None
) -> list[int]:
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
    for row in rows:
        result = await _apply_one(session, row, now, confirm)
        applied = result.changed
        await session.execute(
            update(EVENTS)
            .where(EVENTS.c.id == row.id)
            .values(applied=applied, applied_at=now, reason=result.value)
        )
        if applied:
            metrics.CALLBACKS_APPLIED.inc()
        else:
            metrics.CALLBACKS_UNAPPLIED.labels(result.value).inc()
    return [row.id for row in rows]


async def _apply_one(session: AsyncSession, row: Any, now: datetime, confirm: bool) -> Applied:
    outcome = outcome_of(row)
    if confirm:
        return await mark_pending(session, outcome, now)
    return await apply_outcome(session, outcome, now)


def outcome_of(row: Any) -> Outcome:
    """The Outcome an AI event row carries; `Data` is a JSON string (vod-reference.md 6.2)."""
    body = json.loads(row.body)
    return Outcome(
        job_id=row.job_id,
        type=row.event_type.removesuffix("Complete"),
        status=row.status,
        media_id=row.media_id,
        code=_short(body.get("Code"), 128),
        message=_short(body.get("Message"), 4000),
        data=parse_data(body.get("Data")),
        event_time=row.event_time,
        completed_at=parse_event_time(body.get("CompleteTime")) or row.event_time,
    )


def parse_data(data: Any) -> Any:
    """VOD sends the result as a JSON string; keep the raw string if it is not clean JSON."""
    if not isinstance(data, str):
        return data if is_clean(data) else storable(json.dumps(data))
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return storable(data)
    return parsed if is_clean(parsed) else storable(data)


def storable(text: str) -> str:
    """`text` with NUL and unpaired surrogates escaped, so any database takes it."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()


def is_clean(value: Any, depth: int = 0) -> bool:
    """True if every string in `value` is storable text: valid UTF-8, no NUL (PostgreSQL)."""
    if depth > 64:
        return False
    if isinstance(value, str):
        return "\x00" not in value and _encodes(value)
    if isinstance(value, dict):
        return all(is_clean(k, depth + 1) and is_clean(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(is_clean(item, depth + 1) for item in value)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate from a "\\ud800" escape
        return False
    return True


def _short(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    return storable(str(value))[:limit]


def parse_event_time(value: Any) -> datetime | None:
    """VOD's EventTime/CompleteTime, leniently (vod-reference.md 6.2); None if not a time."""
    try:
        return parse_vod_time(value)
    except OverflowError:  # e.g. year 1 with a positive offset
        return None


async def _set_aside(database: Database, event_id: int, now: datetime, exc: Exception) -> None:
    """Store an event that raised twice as not applied, so it cannot block the queue."""
    async with database.write() as session:
        await session.execute(
            update(EVENTS)
            .where(EVENTS.c.id == event_id, EVENTS.c.applied.is_(None))
            .values(applied=False, applied_at=now, reason=f"apply_error: {type(exc).__name__}")
        )
    log.error("callback event %s set aside: %s", event_id, _describe(exc))
    metrics.CALLBACKS_UNAPPLIED.labels("apply_error").inc()


def _is_disconnect(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or "connect" in str(exc.orig).lower()
    return isinstance(exc, OSError | ConnectionError | TimeoutError)


def _label(reason: str | None) -> str:
    return (reason or "unknown").split(":", 1)[0]


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"
