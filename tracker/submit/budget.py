"""Statements: the spend guard, minutes of video reserved per UTC day and type (`budgets`).

A reservation runs in the claim's transaction (`claims.py`), before anything is sent to VOD: the
day's rows of the requested types are locked (PostgreSQL: SELECT ... FOR UPDATE, in type order,
so two claims never wait on each other crosswise; SQLite: the writer's BEGIN IMMEDIATE holds the
lock already), each request is checked in order against what is left, and the rows are written
with an UPDATE that repeats the check (`used + requested <= limit`): N submitters on any number
of replicas never reserve past a limit. A submission VOD refuses gives its minutes back
(`release`); an unknown outcome keeps them (VOD may have charged).

What is counted is what the tracker submits: the seconds of video VOD's GetVideoInfo reported,
per job type, in milliseconds. Not what VOD finally bills (its rounding and minimums are not
documented, vod-mediainfo-reference.md 4). The first time in a UTC day that a type's budget
refuses a submission or is used up, a `budget.exhausted` change is written in the same
transaction (once: `exhausted_at` is set with it).

Every function here takes a session and never commits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from pydantic import Field
from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import iso
from tracker.config import Settings
from tracker.db import insert
from tracker.errors import Error, TrackerError
from tracker.models import Budget as BudgetRow
from tracker.models import JobChange
from tracker.shapes import BUDGET_EXHAUSTED, BudgetExhausted

MS_PER_MINUTE = 60_000


def video_ms(duration_s: float | None) -> int:
    """Milliseconds of video counted for a duration (none known: nothing)."""
    return 0 if duration_s is None else round(duration_s * 1000)


def minutes(ms: int) -> float:
    """Milliseconds as minutes, to the millisecond's precision in minutes' decimals."""
    return round(ms / MS_PER_MINUTE, 6)


def day_of(now: datetime) -> date:
    """The UTC day a moment counts against."""
    return now.astimezone(UTC).date()


def next_midnight(now: datetime) -> datetime:
    """When the budget of `now`'s day resets: the next UTC midnight."""
    return datetime.combine(day_of(now) + timedelta(days=1), time(), UTC)


@dataclass(frozen=True)
class Budget:
    """The daily limits per type in milliseconds (a type not named has none), and the prices
    that turn minutes into an estimate (TRACKER_DAILY_MINUTES, TRACKER_PRICE_PER_MINUTE,
    TRACKER_CURRENCY)."""

    limits_ms: Mapping[str, int] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=dict)
    currency: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> Budget:
        limits = {t: round(m * MS_PER_MINUTE) for t, m in settings.daily_minutes.items()}
        return cls(limits, dict(settings.price_per_minute), settings.currency)

    def limit_ms(self, job_type: str) -> int | None:
        return self.limits_ms.get(job_type)

    def cost(self, ms_by_type: Mapping[str, int]) -> float | None:
        """An estimate in `currency` of these minutes, over the types that have a price; None
        when none has. Our arithmetic on the configured prices, not VOD's bill."""
        priced = {t: ms for t, ms in ms_by_type.items() if t in self.prices}
        if not priced:
            return None
        return round(sum(self.prices[t] * ms / MS_PER_MINUTE for t, ms in priced.items()), 6)


UNLIMITED = Budget()


class BudgetRefusal(Error):
    """The body of a 429 `budget_exceeded`."""

    type: Annotated[str, Field(description="the job type whose budget is exhausted")]
    minutes_requested: Annotated[float, Field(description="minutes of video of the submission")]
    minutes_left: Annotated[float, Field(description="minutes left of the type's day")]
    resets_at: Annotated[str, Field(description="the next UTC midnight (ISO 8601)")]


class BudgetExceeded(TrackerError):
    """A submission would take a type past its day's budget: refused as a whole, nothing sent.
    `Retry-After` is the seconds to the next UTC midnight."""

    status_code = 429
    code = "budget_exceeded"

    def __init__(self, job_type: str, requested_ms: int, left_ms: int, now: datetime) -> None:
        self.job_type = job_type
        self.requested_ms = requested_ms
        self.left_ms = max(0, left_ms)
        self.resets_at = next_midnight(now)
        super().__init__(
            f"{job_type}: this submission needs {minutes(requested_ms):g} minutes of video, "
            f"{minutes(self.left_ms):g} are left of today's budget (TRACKER_DAILY_MINUTES); "
            f"nothing was submitted; the budget resets at {iso(self.resets_at)}"
        )
        wait = math.ceil((self.resets_at - now).total_seconds())
        self.headers = {"Retry-After": str(max(1, wait))}

    def to_json(self) -> BudgetRefusal:
        return {
            "error": self.code,
            "message": self.message,
            "type": self.job_type,
            "minutes_requested": minutes(self.requested_ms),
            "minutes_left": minutes(self.left_ms),
            "resets_at": iso(self.resets_at),
        }


# --- statements ---------------------------------------------------------------------------------


async def reserve(
    session: AsyncSession,
    budget: Budget,
    wanted: Sequence[Mapping[str, int]],
    now: datetime,
) -> list[BudgetExceeded | None]:
    """Reserve each request's milliseconds per type (`wanted`, in order), on `now`'s UTC day:
    a request that fits every one of its types' budgets is reserved whole; one that does not
    reserves nothing and gets the BudgetExceeded of its first type over budget. Writes the
    day's rows, and `budget.exhausted` for a type that refused or ran out."""
    verdicts: list[BudgetExceeded | None] = [None] * len(wanted)
    types = sorted({t for request in wanted for t in request})
    if not types:
        return verdicts
    day = day_of(now)
    used = await _lock_rows(session, budget, day, types, now)
    added = dict.fromkeys(types, 0)
    jobs = dict.fromkeys(types, 0)
    refusals: dict[str, tuple[int, int]] = {}  # type -> (requested, used then) of the first
    for index, request in enumerate(wanted):
        over = next(
            (
                t
                for t in sorted(request)
                if (limit := budget.limit_ms(t)) is not None
                and used[t] + added[t] + request[t] > limit
            ),
            None,
        )
        if over is not None:
            limit = budget.limit_ms(over)
            assert limit is not None
            left = limit - used[over] - added[over]
            verdicts[index] = BudgetExceeded(over, request[over], left, now)
            refusals.setdefault(over, (request[over], used[over] + added[over]))
            continue
        for t, ms in request.items():
            added[t] += ms
            jobs[t] += 1
    for t in types:
        if jobs[t]:
            await _add(session, budget, day, t, added[t], jobs[t], now)
    for t in types:
        limit = budget.limit_ms(t)
        if limit is None:
            continue
        if t in refusals:
            requested, spent = refusals[t]
        elif jobs[t] and used[t] + added[t] >= limit:
            requested, spent = _last_reserved(wanted, verdicts, t), used[t] + added[t]
        else:
            continue
        await _mark_exhausted(session, t, day, limit, spent, requested, now)
    return verdicts


def _last_reserved(
    wanted: Sequence[Mapping[str, int]], verdicts: Sequence[BudgetExceeded | None], job_type: str
) -> int:
    """The milliseconds of the last reserved request of a type: the one that used it up."""
    for request, verdict in zip(reversed(wanted), reversed(verdicts), strict=True):
        if verdict is None and job_type in request:
            return request[job_type]
    return 0


async def release(
    session: AsyncSession, day: date, ms_by_type: Mapping[str, int], now: datetime
) -> None:
    """Give back the minutes of jobs VOD refused (or that were never sent), one job each, to
    the day they were reserved on. `exhausted_at` stays: the day's change was written."""
    for job_type, ms in sorted(ms_by_type.items()):
        await session.execute(
            update(BudgetRow)
            .where(BudgetRow.day == day, BudgetRow.type == job_type)
            .values(used_ms=BudgetRow.used_ms - ms, jobs=BudgetRow.jobs - 1, updated_at=now)
        )


async def day_rows(session: AsyncSession, day: date) -> dict[str, BudgetRow]:
    """The day's rows by type (the types nothing was submitted for have none)."""
    rows = await session.scalars(select(BudgetRow).where(BudgetRow.day == day))
    return {row.type: row for row in rows}


async def days_since(session: AsyncSession, since: date) -> list[BudgetRow]:
    """Every row from `since` on, newest day first, types in name order (the console's spend
    per day): one row per day and type anything was reserved for, so a short read."""
    query = (
        select(BudgetRow)
        .where(BudgetRow.day >= since)
        .order_by(BudgetRow.day.desc(), BudgetRow.type)
    )
    return list(await session.scalars(query))


async def _lock_rows(
    session: AsyncSession, budget: Budget, day: date, types: Sequence[str], now: datetime
) -> dict[str, int]:
    """The day's rows of `types`, made if missing and locked until the transaction ends; what
    each has used so far."""
    table = BudgetRow.__table__
    await session.execute(
        insert(session, table).on_conflict_do_nothing(),
        [
            {
                "day": day,
                "type": t,
                "used_ms": 0,
                "jobs": 0,
                "limit_ms": budget.limit_ms(t),
                "updated_at": now,
            }
            for t in types
        ],
    )
    query = (
        select(BudgetRow.type, BudgetRow.used_ms)
        .where(BudgetRow.day == day, BudgetRow.type.in_(types))
        .order_by(BudgetRow.type)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return {t: int(ms) for t, ms in await session.execute(query)}


async def _add(
    session: AsyncSession,
    budget: Budget,
    day: date,
    job_type: str,
    ms: int,
    jobs: int,
    now: datetime,
) -> None:
    """The reservation, with the check repeated by the database: it holds the row's lock, so a
    miss here is a broken invariant, not a race, and fails the whole claim."""
    limit = budget.limit_ms(job_type)
    where = [BudgetRow.day == day, BudgetRow.type == job_type]
    if limit is not None:
        where.append(BudgetRow.used_ms + ms <= limit)
    result = await session.execute(
        update(BudgetRow)
        .where(and_(*where))
        .values(
            used_ms=BudgetRow.used_ms + ms,
            jobs=BudgetRow.jobs + jobs,
            limit_ms=limit,
            updated_at=now,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise RuntimeError(f"the {job_type} budget of {day} changed under its lock")


async def _mark_exhausted(
    session: AsyncSession,
    job_type: str,
    day: date,
    limit_ms: int,
    used_ms: int,
    requested_ms: int,
    now: datetime,
) -> None:
    """Once per day and type: `exhausted_at`, and the `budget.exhausted` change with it."""
    marked = await session.execute(
        update(BudgetRow)
        .where(BudgetRow.day == day, BudgetRow.type == job_type, BudgetRow.exhausted_at.is_(None))
        .values(exhausted_at=now)
    )
    if marked.rowcount != 1:  # type: ignore[attr-defined]
        return
    data: BudgetExhausted = {
        "type": job_type,
        "day": day.isoformat(),
        "minutes_limit": minutes(limit_ms),
        "minutes_used": minutes(used_ms),
        "minutes_requested": minutes(requested_ms),
        "resets_at": iso(next_midnight(now)),
    }
    await append_change(session, BUDGET_EXHAUSTED, dict(data), now)


async def append_change(
    session: AsyncSession, change_type: str, data: dict[str, object], now: datetime
) -> None:
    """A change of no job in the change log, as the relay, the feed and the stream read every
    row: `job_row_id` 0 (no job has it), no JobId or media, no state. Its `seq`: on SQLite the
    id (the single writer commits in id order, as the triggers do); on PostgreSQL drawn at
    commit by the log's sequencing trigger (migration 0004)."""
    table = JobChange.__table__
    inserted = await session.execute(
        insert(session, table)
        .values(
            type=change_type,
            job_row_id=0,
            job_id=None,
            media_id="",
            previous_state=None,
            state="",
            occurred_at=now,
            data=data,
        )
        .returning(table.c.id)
    )
    change_id = inserted.scalar_one()
    if session.get_bind().dialect.name != "postgresql":
        await session.execute(
            update(JobChange).where(JobChange.id == change_id).values(seq=change_id)
        )
