"""What the overview counts and charts, read from the counts and hourly rollups that triggers
keep (migration 0006): a few dozen rows whatever the number of jobs, never a scan of them.

Statements: take a session, never commit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import UNFINISHED, Job, JobCount, Rollup

# Upper bounds (seconds) of the time-to-result histogram's buckets; the last bucket is open.
# The same edges as migration 0006 (a test holds them equal).
DURATION_EDGES: tuple[int, ...] = (
    1,
    2,
    5,
    10,
    20,
    30,
    45,
    60,
    90,
    120,
    180,
    300,
    450,
    600,
    900,
    1200,
    1800,
)
DURATION_EDGES += (2700, 3600, 5400, 7200, 10800, 14400, 21600, 43200, 86400)
HOURS = 24


@dataclass
class Counts:
    """Jobs by (type, region, state, stale): exact, from the counters."""

    rows: dict[tuple[str, str, str, bool], int] = field(default_factory=dict)

    def by_state(self) -> dict[str, int]:
        return self._sum(lambda key: key[2])

    def by_type(self) -> dict[str, int]:
        return self._sum(lambda key: key[0])

    def by_region(self) -> dict[str, int]:
        return self._sum(lambda key: key[1])

    def by_type_state(self) -> dict[tuple[str, str], int]:
        return self._sum(lambda key: (key[0], key[2]))

    def stale(self) -> int:
        return sum(n for key, n in self.rows.items() if key[3])

    def total(self) -> int:
        return sum(self.rows.values())

    def _sum(self, part: object) -> dict:  # type: ignore[type-arg]
        totals: dict[object, int] = defaultdict(int)
        for key, n in self.rows.items():
            totals[part(key)] += n  # type: ignore[operator]
        return {k: v for k, v in totals.items() if v}


async def job_counts(session: AsyncSession) -> Counts:
    """Every count, its shards added up."""
    total = func.sum(JobCount.count)
    query = select(JobCount.type, JobCount.region, JobCount.state, JobCount.stale, total).group_by(
        JobCount.type, JobCount.region, JobCount.state, JobCount.stale
    )
    rows = {
        (job_type, region, state, bool(stale)): int(n)
        for job_type, region, state, stale, n in await session.execute(query)
        if n
    }
    return Counts(rows)


async def oldest_unfinished(session: AsyncSession) -> Job | None:
    """The unfinished job submitted first: one index probe per unfinished state."""
    found: list[Job] = []
    for state in UNFINISHED:
        job = await session.scalar(
            select(Job).where(Job.state == state).order_by(Job.submitted_at, Job.id).limit(1)
        )
        if job is not None:
            found.append(job)
    return min(found, key=lambda job: job.submitted_at, default=None)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def last_hours(now: datetime, hours: int = HOURS) -> list[datetime]:
    """The starts of the last `hours` hours, the current (partial) one last."""
    current = hour_of(now)
    return [current - timedelta(hours=hours - 1 - i) for i in range(hours)]


Hourly = dict[tuple[datetime, str, int], int]  # (hour, key, bucket) -> count


async def hourly(session: AsyncSession, metric: str, since: datetime) -> Hourly:
    """One metric's rollups from `since` on (an index range: the hour leads the key)."""
    query = (
        select(Rollup.hour, Rollup.key, Rollup.bucket, func.sum(Rollup.count))
        .where(Rollup.hour >= since, Rollup.metric == metric)
        .group_by(Rollup.hour, Rollup.key, Rollup.bucket)
    )
    return {
        (hour, key, int(bucket)): int(n)
        for hour, key, bucket, n in await session.execute(query)
        if n
    }


async def hourly_metrics(
    session: AsyncSession, metrics: tuple[str, ...], since: datetime
) -> dict[str, Hourly]:
    """Several metrics' rollups from `since` on, in one statement."""
    query = (
        select(Rollup.metric, Rollup.hour, Rollup.key, Rollup.bucket, func.sum(Rollup.count))
        .where(Rollup.hour >= since, Rollup.metric.in_(metrics))
        .group_by(Rollup.metric, Rollup.hour, Rollup.key, Rollup.bucket)
    )
    found: dict[str, Hourly] = {metric: {} for metric in metrics}
    for metric, hour, key, bucket, n in await session.execute(query):
        if n:
            found[metric][(hour, key, int(bucket))] = int(n)
    return found


def series(rollup: Hourly, hours: list[datetime], key: str) -> list[int]:
    totals: dict[datetime, int] = defaultdict(int)
    for (hour, k, _bucket), n in rollup.items():
        if k == key:
            totals[hour] += n
    return [totals.get(hour, 0) for hour in hours]


def percentile(histogram: dict[int, int], fraction: float) -> float | None:
    """The `fraction` quantile of a bucketed histogram, interpolated inside its bucket."""
    total = sum(histogram.values())
    if total == 0:
        return None
    target = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        n = histogram[bucket]
        if seen + n >= target:
            low = DURATION_EDGES[bucket - 1] if bucket > 0 else 0
            high = DURATION_EDGES[bucket] if bucket < len(DURATION_EDGES) else 2 * low
            return low + (high - low) * ((target - seen) / n)
        seen += n
    return None  # pragma: no cover - the loop reaches the total


def duration_series(
    rollup: Hourly, hours: list[datetime], job_type: str, fraction: float
) -> list[float | None]:
    """Per hour, the `fraction` quantile of the time from submission to a result."""
    histograms: dict[datetime, dict[int, int]] = defaultdict(dict)
    for (hour, key, bucket), n in rollup.items():
        if key == job_type:
            histograms[hour][bucket] = histograms[hour].get(bucket, 0) + n
    return [
        percentile(histograms[hour], fraction) if hour in histograms else None for hour in hours
    ]


def keys_of(rollup: Hourly) -> list[str]:
    return sorted({key for _hour, key, _bucket in rollup})
