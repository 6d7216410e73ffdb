"""Read-side queries of the status API, the console and `tracker jobs`: one place, indexed.

Statements: take a session, never commit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.errors import BadRequest
from tracker.metrics import CALLBACKS_REJECTED
from tracker.models import (
    UNFINISHED,
    CallbackEvent,
    Delivery,
    Heartbeat,
    Job,
    Subscription,
)

log = logging.getLogger(__name__)

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# A media has a handful of jobs and a job a handful of callbacks; these caps only bound abuse.
MAX_MEDIA_JOBS = 1000
MAX_EVENTS = 1000
CURSOR_LIMIT = 256  # characters of a `cursor` parameter


@dataclass(frozen=True)
class JobFilter:
    """Filters of a job list; part of every cursor, so a cursor cannot cross filter sets."""

    states: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    media_id: str | None = None
    stale: bool | None = None
    submitted_after: datetime | None = None
    submitted_before: datetime | None = None

    def fingerprint(self) -> str:
        filters: list[object] = [
            sorted(self.states),
            sorted(self.types),
            self.media_id,
            self.stale,
            self.submitted_after.isoformat() if self.submitted_after else None,
            self.submitted_before.isoformat() if self.submitted_before else None,
        ]
        if self.regions:  # appended only when given: cursors issued before regions stay valid
            filters.append(sorted(self.regions))
        canonical = json.dumps(filters)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: the last row's (submitted_at, id), plus the filters."""

    submitted_at: datetime
    id: int
    filters: str

    def encode(self) -> str:
        raw = json.dumps([1, self.submitted_at.isoformat(), self.id, self.filters])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, job_filter: JobFilter) -> Cursor:
        try:
            # Ours are about 110 characters; a bound keeps a forged one from nesting JSON deeper
            # than the parser's recursion limit.
            if len(token) > CURSOR_LIMIT:
                raise ValueError(token)
            padded = token + "=" * (-len(token) % 4)
            version, when, row_id, filters = json.loads(base64.urlsafe_b64decode(padded))
            if type(version) is not int or version != 1 or not isinstance(filters, str):
                raise ValueError(token)
            # type(), not isinstance: JSON's true is a Python bool, which is an int.
            if type(row_id) is not int or not 0 <= row_id < 2**63:
                raise ValueError(token)
            submitted_at = datetime.fromisoformat(when)
            if submitted_at.utcoffset() != timedelta(0):  # we only issue UTC
                raise ValueError(token)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise BadRequest("cursor: not a cursor this API issued", parameter="cursor") from None
        if filters != job_filter.fingerprint():
            raise BadRequest(
                "cursor: issued for other filters; repeat the filters of the first page",
                parameter="cursor",
            )
        return cls(submitted_at, row_id, filters)


@dataclass(frozen=True)
class Page:
    items: list[Job]
    next_cursor: str | None


def _filtered(query: Select[tuple[Job]], f: JobFilter) -> Select[tuple[Job]]:
    if f.types:
        query = query.where(Job.type.in_(f.types))
    if f.regions:
        query = query.where(Job.region.in_(f.regions))
    if f.media_id is not None:
        query = query.where(Job.media_id == f.media_id)
    if f.stale is not None:
        query = query.where(Job.stale.is_(f.stale))
    if f.submitted_after is not None:
        query = query.where(Job.submitted_at > f.submitted_after)
    if f.submitted_before is not None:
        query = query.where(Job.submitted_at < f.submitted_before)
    return query


def could_be_stored(*values: str | None) -> bool:
    """PostgreSQL text cannot hold NUL, so no stored value has one: such a filter matches
    nothing (and must not reach the driver, which would raise)."""
    return not any(value is not None and "\x00" in value for value in values)


def list_statement(f: JobFilter, limit: int, after: Cursor | None) -> Select[Any]:
    """One page plus one row (to know whether another page follows), newest first by
    (submitted_at, id). Every page is an index range scan, the 100th as cheap as the first.

    Several states become one ordered, limited branch per state (each served by the
    (state, submitted_at, id) index) merged by UNION ALL, instead of sorting every match.
    """
    order = (Job.submitted_at.desc(), Job.id.desc())

    def branch(state: str | None) -> Select[Any]:
        query = _filtered(select(Job), f)
        if state is not None:
            query = query.where(Job.state == state)
        if after is not None:
            # A range plus a tie-break rather than a row-value comparison, so that both
            # databases use the index for the range.
            query = query.where(
                Job.submitted_at <= after.submitted_at,
                or_(Job.submitted_at < after.submitted_at, Job.id < after.id),
            )
        return query.order_by(*order).limit(limit + 1)

    if len(f.states) <= 1:
        return branch(f.states[0] if f.states else None)
    merged = union_all(*(branch(s).subquery().select() for s in f.states)).subquery()
    return (
        select(merged).order_by(merged.c.submitted_at.desc(), merged.c.id.desc()).limit(limit + 1)
    )


async def list_jobs(
    session: AsyncSession, f: JobFilter, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page:
    """A page of jobs matching `f` after `cursor` (which must come from the same filters)."""
    after = Cursor.decode(cursor, f) if cursor else None
    if not could_be_stored(f.media_id, *f.types, *f.regions):
        return Page([], None)
    statement = list_statement(f, limit, after)
    rows = list((await session.scalars(select(Job).from_statement(statement))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = Cursor(last.submitted_at, last.id, f.fingerprint()).encode()
    return Page(rows, next_cursor)


async def get_job(session: AsyncSession, job_id: str) -> Job | None:
    if not could_be_stored(job_id):
        return None
    return await session.scalar(select(Job).where(Job.job_id == job_id))


async def media_jobs(session: AsyncSession, media_id: str) -> list[Job]:
    if not could_be_stored(media_id):
        return []
    query = (
        select(Job)
        .where(Job.media_id == media_id)
        .order_by(Job.submitted_at.desc(), Job.id.desc())
        .limit(MAX_MEDIA_JOBS)
    )
    return list((await session.scalars(query)).all())


async def job_events(session: AsyncSession, job_id: str) -> list[CallbackEvent]:
    if not could_be_stored(job_id):
        return []
    query = (
        select(CallbackEvent)
        .where(CallbackEvent.job_id == job_id)
        .order_by(CallbackEvent.received_at, CallbackEvent.id)
        .limit(MAX_EVENTS)
    )
    return list((await session.scalars(query)).all())


async def recent_events(session: AsyncSession, limit: int = 20) -> list[CallbackEvent]:
    query = select(CallbackEvent).order_by(CallbackEvent.received_at.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def stale_jobs(session: AsyncSession, limit: int = 50) -> list[Job]:
    query = select(Job).where(Job.stale.is_(True)).order_by(Job.submitted_at, Job.id).limit(limit)
    return list((await session.scalars(query)).all())


async def disabled_subscriptions(session: AsyncSession, limit: int = 50) -> list[Subscription]:
    """The subscriptions nothing is sent to, most recently disabled first."""
    query = (
        select(Subscription)
        .where(Subscription.enabled.is_(False))
        .order_by(Subscription.disabled_at.desc(), Subscription.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


@dataclass(frozen=True)
class SubscriptionCounts:
    enabled: int = 0
    disabled: int = 0
    deliveries_pending: int = 0  # waiting for an attempt or being sent
    deliveries_failed: int = 0  # the dead letters


async def subscription_counts(session: AsyncSession) -> SubscriptionCounts:
    """One statement. Pending deliveries are read on the partial due index; failed ones scan
    the deliveries, which the change log's retention bounds, once per stats refresh."""
    count = func.count()

    def deliveries(*statuses: str) -> Any:
        where = Delivery.status.in_(statuses)
        return select(count).select_from(Delivery).where(where).scalar_subquery()

    subs = select(count).select_from(Subscription)
    enabled, disabled, pending, failed = (
        await session.execute(
            select(
                subs.where(Subscription.enabled.is_(True)).scalar_subquery(),
                subs.where(Subscription.enabled.is_(False)).scalar_subquery(),
                deliveries("pending", "sending"),
                deliveries("failed"),
            )
        )
    ).one()
    return SubscriptionCounts(int(enabled), int(disabled), int(pending), int(failed))


@dataclass
class Stats:
    computed_at: datetime
    jobs: dict[str, dict[str, int]]  # type -> state -> count
    stale: int
    oldest_unfinished_at: datetime | None
    callbacks_received: int
    callbacks_duplicate: int
    callbacks_rejected: int = 0
    heartbeats: list[Heartbeat] = field(default_factory=list)
    subscriptions: SubscriptionCounts = field(default_factory=SubscriptionCounts)

    def by_state(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for states in self.jobs.values():
            for state, count in states.items():
                totals[state] = totals.get(state, 0) + count
        return totals

    def oldest_unfinished_seconds(self, now: datetime) -> float | None:
        if self.oldest_unfinished_at is None:
            return None
        return max(0.0, (now - self.oldest_unfinished_at).total_seconds())


async def compute_stats(session: AsyncSession, now: datetime) -> Stats:
    """Exact figures, fresh from the database. The GROUP BY reads every job (an index-only
    scan at best), which is why callers go through `StatsCache`."""
    counts = await session.execute(
        select(Job.type, Job.state, func.count()).group_by(Job.type, Job.state)
    )
    jobs: dict[str, dict[str, int]] = {}
    for job_type, state, count in counts:
        jobs.setdefault(job_type, {})[state] = int(count)
    stale = await session.scalar(select(func.count()).select_from(Job).where(Job.stale.is_(True)))
    # One index probe per unfinished state ((state, submitted_at, id)), not a scan.
    oldest = [
        await session.scalar(
            select(Job.submitted_at).where(Job.state == state).order_by(Job.submitted_at).limit(1)
        )
        for state in UNFINISHED
    ]
    hour_ago = now - timedelta(hours=1)
    received, repeats = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(CallbackEvent.deliveries - 1), 0)).where(
                CallbackEvent.received_at >= hour_ago
            )
        )
    ).one()
    heartbeats = list((await session.scalars(select(Heartbeat).order_by(Heartbeat.name))).all())
    return Stats(
        computed_at=now,
        jobs=jobs,
        stale=int(stale or 0),
        oldest_unfinished_at=min((t for t in oldest if t is not None), default=None),
        callbacks_received=int(received),
        callbacks_duplicate=int(repeats),
        heartbeats=heartbeats,
        subscriptions=await subscription_counts(session),
    )


class StatsCache:
    """Per-process cache of `compute_stats`: exact figures as of `computed_at`, at most one
    aggregate per `ttl` per process whatever the request rate.

    Why a cache and not counters: counters would have to be kept in step by every writer
    (submitter, inbox applier, sweeper, reconciler, on every replica) inside their own
    transactions, one hot row that all of them contend on, and any missed path drifts for
    ever. The aggregate reads every job (about 0.3 s on PostgreSQL and 2 s on SQLite with a
    million jobs, see benchmarks/status_api.py), so figures older than `ttl` but younger than
    `max_age` are served at once while one background task refreshes them; only a cold or
    long-idle cache makes a request wait. Concurrent callers share one computation (a lock).
    """

    def __init__(
        self, ttl: timedelta = timedelta(seconds=5), max_age: timedelta = timedelta(seconds=60)
    ) -> None:
        self.ttl = ttl
        self.max_age = max_age
        self.refreshing: asyncio.Task[Stats] | None = None
        self._stats: Stats | None = None
        self._lock = asyncio.Lock()
        self._rejected = RecentCount()

    async def get(self, session_factory: Any, now: datetime) -> Stats:
        stats = self._stats
        if stats is not None and self._younger_than(self.ttl, now):
            return stats
        if stats is not None and self._younger_than(self.max_age, now):
            if self.refreshing is None or self.refreshing.done():
                self.refreshing = asyncio.create_task(self._refresh(session_factory, now))
                self.refreshing.add_done_callback(_log_failure)
            return stats
        return await self._refresh(session_factory, now)

    async def _refresh(self, session_factory: Any, now: datetime) -> Stats:
        async with self._lock:
            if self._stats is None or not self._younger_than(self.ttl, now):
                async with session_factory() as session:
                    stats = await compute_stats(session, now)
                stats.callbacks_rejected = self._rejected.observe(
                    now, _counter_total(CALLBACKS_REJECTED)
                )
                self._stats = stats
            return self._stats

    def _younger_than(self, age: timedelta, now: datetime) -> bool:
        # A clock that went backwards counts as expired.
        return self._stats is not None and timedelta(0) <= now - self._stats.computed_at < age


def _log_failure(task: asyncio.Task[Stats]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("stats refresh failed: %r", task.exception())


class RecentCount:
    """Increase of a monotonically growing total over the last hour, from samples taken at
    each stats refresh. Rejected callbacks are never stored, so only this process's counter knows
    them: the figure covers this process since it started, at most the last hour."""

    WINDOW = timedelta(hours=1)

    def __init__(self) -> None:
        self._samples: list[tuple[datetime, float]] = []

    def observe(self, now: datetime, total: float) -> int:
        self._samples.append((now, total))
        horizon = now - self.WINDOW
        while len(self._samples) > 1 and self._samples[1][0] <= horizon:
            self._samples.pop(0)
        # Bound memory: keep at most one sample per second of the window.
        if len(self._samples) > 3600:
            self._samples = self._samples[::2]
        base = self._samples[0][1] if self._samples[0][0] <= horizon else 0.0
        return int(total - base)


def _counter_total(counter: Any) -> float:
    return float(
        sum(
            sample.value
            for metric in counter.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
    )


def split_csv(values: Sequence[str]) -> tuple[str, ...]:
    """`a,b` and repeated parameters alike, in order, without repeats."""
    parts = (part.strip() for value in values for part in value.split(","))
    return tuple(dict.fromkeys(part for part in parts if part))
