"""A relay turn's queries for due deliveries against the number of deliveries: one subscription
with HISTORY deliveries.

- `due_targets`, HISTORY made and 10 pending, as it is (the partial index `ix_deliveries_due`, its
  condition written as literal SQL) against the statuses bound as parameters, as until 3465a9f:
  SQLite then read every delivery the subscription ever had, at each turn.
- `next_due`, all HISTORY waiting for a retry (a receiver down), as it is (the first entry of each
  subscription's range of the index) against the minimum over the whole index, as until 2c01982.

    python benchmarks/due.py [--postgres-url postgresql+asyncpg://...] [--history 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from common import fresh_databases
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import Database
from tracker.models import DELIVERY_DUE_SQL, Delivery
from tracker.notify import claims

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(hours=2)  # every delivery's retry, in `next_due`
REPEAT = 9


def whole_index(session: AsyncSession) -> Awaitable[datetime | None]:
    """`next_due` as it was: the minimum over every entry of the partial index."""
    query = select(func.min(Delivery.next_attempt_at)).where(text(DELIVERY_DUE_SQL))
    return session.scalar(query)


def bound(now: datetime) -> Any:
    """`is_due` as it was: the statuses as parameters."""
    return Delivery.status.in_(("pending", "sending")) & (Delivery.next_attempt_at <= now)


async def fill(database: Database, history: int) -> None:
    at = "CAST(:at AS TIMESTAMP WITH TIME ZONE)" if not database.is_sqlite else ":at"
    rows = (
        "SELECT n FROM generate_series(1, :history) AS n"
        if not database.is_sqlite
        else "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :history) "
        "SELECT n FROM g"
    )
    async with database.write() as session:
        await session.execute(
            text(
                "INSERT INTO subscriptions (id, url, secret, enabled, source, cursor_seq, "
                "created_at, updated_at) VALUES (1, 'http://x', 'k', true, 'api', 0, :at, :at)"
            ),
            {"at": NOW},
        )
        await session.execute(
            text(
                "INSERT INTO deliveries (subscription_id, change_seq, status, attempts, "
                'next_attempt_at, "trigger", created_at, updated_at) SELECT 1, n, '
                "CASE WHEN n > :history - 10 THEN 'pending' ELSE 'succeeded' END, 1, "
                f"CASE WHEN n > :history - 10 THEN {at} END, 'scheduled', :at, :at "
                f"FROM ({rows}) AS g"
            ),
            {"history": history, "at": NOW},
        )
    if not database.is_sqlite:
        async with database.write() as session:
            await session.execute(text("ANALYZE deliveries"))


async def timed(database: Database, condition: Callable[[datetime], Any]) -> float:
    """Median ms of `due_targets` with `condition` as `is_due`."""
    times = []
    with patch.object(claims, "is_due", condition):
        for _ in range(REPEAT):
            started = time.perf_counter()
            async with database.session() as session:
                found = await claims.due_targets(session, NOW + timedelta(hours=1))
            times.append((time.perf_counter() - started) * 1000)
            assert [t.id for t in found] == [1]
    return statistics.median(times)


async def timed_next_due(
    database: Database, query: Callable[[AsyncSession], Awaitable[datetime | None]]
) -> float:
    """Median ms of `query`, the relay's next due time."""
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        async with database.session() as session:
            assert await query(session) == LATER
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(url: str, history: int) -> list[tuple[str, float, float]]:
    database = Database(url)
    try:
        await fill(database, history)
        rows = [("due_targets", await timed(database, bound), await timed(database, claims.is_due))]
        async with database.write() as session:
            await session.execute(update(Delivery).values(status="pending", next_attempt_at=LATER))
        if not database.is_sqlite:
            async with database.write() as session:
                await session.execute(text("ANALYZE deliveries"))
        before = await timed_next_due(database, whole_index)
        rows.append(("next_due", before, await timed_next_due(database, claims.next_due)))
        return rows
    finally:
        await database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url")
    parser.add_argument("--history", type=int, default=1_000_000)
    args = parser.parse_args()
    lines = [
        f"One subscription with {args.history:,} deliveries: `due_targets` with 10 of them due, "
        f"`next_due` with all waiting for a retry; median of {REPEAT}",
        "",
        "| database | query | before | now | ratio |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, url in fresh_databases(args.postgres_url, Path(tmp)):
            for name, before, now in asyncio.run(measure(url, args.history)):
                ratio = now / before
                lines.append(f"| {kind} | {name} | {before:.2f} ms | {now:.2f} ms | {ratio:.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
