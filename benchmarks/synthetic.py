"""Millions of plausible jobs in seconds, for scale tests and benchmarks (never for production).

Row n (1-based) is a pure function of n, so tests can compute exactly what every query must
answer. The rows are made by the database itself (`generate_series` on PostgreSQL, a recursive
CTE on SQLite) in one INSERT ... SELECT per chunk: no Python objects per row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tracker.db import Database

BASE = datetime(2025, 1, 1, tzinfo=UTC)
TYPES = ("AIVideoTag", "AIMediaDNA")
CHUNK = 200_000


@dataclass(frozen=True)
class SyntheticJob:
    n: int
    job_id: str
    media_id: str
    type: str
    state: str
    stale: bool
    submitted_at: datetime


def state_of(n: int) -> str:
    r = n % 20
    if r < 12:
        return "succeeded"
    if r < 15:
        return "failed"
    if r < 18:
        return "processing"
    return "submit_unknown" if r == 18 else "lost"


def job(n: int) -> SyntheticJob:
    """The n-th generated job: what the SQL below writes, computed in Python."""
    state = state_of(n)
    return SyntheticJob(
        n=n,
        job_id=f"job-{n}",
        media_id=f"media-{n // 2}",
        type=TYPES[n % 2],
        state=state,
        stale=state == "processing" and n % 7 == 0,
        # Three jobs share each second, so pagination must break ties by id.
        submitted_at=BASE + timedelta(seconds=n // 3),
    )


def expected_counts(count: int) -> Counter[tuple[str, str]]:
    return Counter((job(n).type, job(n).state) for n in range(1, count + 1))


_STATE_SQL = """CASE WHEN n % 20 < 12 THEN 'succeeded' WHEN n % 20 < 15 THEN 'failed'
    WHEN n % 20 < 18 THEN 'processing' WHEN n % 20 = 18 THEN 'submit_unknown' ELSE 'lost' END"""
_TYPE_SQL = "CASE WHEN n % 2 = 0 THEN 'AIVideoTag' ELSE 'AIMediaDNA' END"
_STALE_SQL = "(n % 20 BETWEEN 15 AND 17 AND n % 7 = 0)"
_COLUMNS = "job_id, media_id, type, state, origin, stale, stale_at, submitted_at, updated_at"

_PG_TIME = "(CAST(:base AS timestamptz) + make_interval(secs => n / 3))"
_POSTGRES = f"""
INSERT INTO jobs ({_COLUMNS})
SELECT 'job-' || n, 'media-' || (n / 2), {_TYPE_SQL},
  {_STATE_SQL}, 'submitted', {_STALE_SQL},
  CASE WHEN {_STALE_SQL} THEN {_PG_TIME} + interval '1 hour' END, {_PG_TIME}, {_PG_TIME}
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n
"""

# SQLAlchemy stores SQLite datetimes as text 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC here).
_SQLITE_TIME = "strftime('%Y-%m-%d %H:%M:%S', :base + n / 3{extra}, 'unixepoch') || '.000000'"
_SQLITE = f"""
INSERT INTO jobs ({_COLUMNS})
WITH RECURSIVE s(n) AS (SELECT :first UNION ALL SELECT n + 1 FROM s WHERE n < :last)
SELECT 'job-' || n, 'media-' || (n / 2), {_TYPE_SQL},
  {_STATE_SQL}, 'submitted', {_STALE_SQL},
  CASE WHEN {_STALE_SQL} THEN {_SQLITE_TIME.format(extra=" + 3600")} END,
  {_SQLITE_TIME.format(extra="")}, {_SQLITE_TIME.format(extra="")}
FROM s
"""


async def generate_jobs(database: Database, count: int, *, first: int = 1) -> None:
    """Insert jobs n = first .. first+count-1, then refresh the planner's statistics."""
    last = first + count - 1
    for start in range(first, last + 1, CHUNK):
        stop = min(start + CHUNK - 1, last)
        async with database.write() as session:
            if database.is_sqlite:
                params: dict[str, object] = {
                    "base": int(BASE.timestamp()),
                    "first": start,
                    "last": stop,
                }
                await session.execute(text(_SQLITE), params)
            else:
                params = {"base": BASE, "first": start, "last": stop}
                await session.execute(text(_POSTGRES), params)
    async with database.writer.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()
