"""The relay's recorder alone: results recorded per second, and the CPU the event loop's thread
spends on each, against the same results recorded row by row as before (executemany).

Both record RESULTS successful attempts of one subscription in batches of BATCH (a recorder's
commit while deliveries stream), one write transaction each, through `Database.write` as the
recorder does; rounds alternate. The baseline is the statements `record_attempts` ran until
it sent a batch as one JSON parameter: an INSERT and an UPDATE bound row by row.

    python benchmarks/recording.py [--postgres-url postgresql+asyncpg://...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from common import fresh_databases
from sqlalchemy import Table, bindparam, insert, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import Database
from tracker.models import Delivery, DeliveryAttempt
from tracker.notify.attempts import AttemptResult, judge_subscriptions, record_attempts
from tracker.notify.claims import Claimed

RESULTS = 20_000
BATCH = 64
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE = [timedelta(0), timedelta(seconds=5)]
Finished = Sequence[tuple[Claimed, AttemptResult]]


async def rowwise(session: AsyncSession, finished: Finished, now: datetime) -> None:
    """The baseline: the attempts and the settled deliveries bound row by row."""
    await session.execute(
        insert(cast(Table, DeliveryAttempt.__table__)),
        [
            {
                "delivery_id": c.id,
                "attempted_at": now,
                "status_code": r.status_code,
                "duration_ms": r.duration_ms,
                "error": r.error,
                "response_body": r.body or None,
                "trigger": c.trigger,
            }
            for c, r in finished
        ],
    )
    table = cast(Table, Delivery.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.claim_id == bindparam("b_claim"))
        .values(
            status=bindparam("b_status"),
            attempts=bindparam("b_attempts"),
            last_error=bindparam("b_error"),
            next_attempt_at=bindparam("b_next", type_=table.c.next_attempt_at.type),
            lease_until=None,
            claim_id=None,
            updated_at=now,
        ),
        [
            {
                "b_id": c.id,
                "b_claim": c.claim_id,
                "b_status": "succeeded",
                "b_attempts": c.attempts + 1,
                "b_error": None,
                "b_next": None,
            }
            for c, _ in finished
        ],
    )
    await judge_subscriptions(session, finished, now, timedelta(days=1))


async def batched(session: AsyncSession, finished: Finished, now: datetime) -> None:
    await record_attempts(session, finished, now, schedule=SCHEDULE, disable_after=timedelta(1))


async def claimed_deliveries(database: Database, first: int) -> Finished:
    """RESULTS deliveries leased to one claim, with a successful attempt each."""
    async with database.write() as session:
        await session.execute(
            text(
                "INSERT INTO deliveries (id, subscription_id, change_seq, status, attempts, "
                'next_attempt_at, lease_until, claim_id, "trigger", created_at, updated_at) '
                "VALUES (:id, 1, :id, 'sending', 0, :now, :now, 'c1', 'scheduled', :now, :now)"
            ),
            [{"id": n, "now": NOW} for n in range(first, first + RESULTS)],
        )
    return [
        (
            Claimed(n, 1, "c1", 0, "scheduled", "http://x", ("k",), n, b"{}", NOW),
            AttemptResult(204, 1.5, body=""),
        )
        for n in range(first, first + RESULTS)
    ]


Record = Callable[[AsyncSession, Finished, datetime], Awaitable[None]]


async def timed(database: Database, record: Record, first: int) -> tuple[float, float]:
    """Results/s and the event loop thread's CPU (us) per result."""
    finished = await claimed_deliveries(database, first)
    cpu, started = time.thread_time(), time.perf_counter()
    for start in range(0, RESULTS, BATCH):
        async with database.write() as session:
            await record(session, finished[start : start + BATCH], NOW)
    took = time.perf_counter() - started
    return RESULTS / took, (time.thread_time() - cpu) / RESULTS * 1e6


async def measure(url: str, rounds: int) -> dict[str, list[tuple[float, float]]]:
    database = Database(url)
    runs: dict[str, list[tuple[float, float]]] = {"row by row": [], "one JSON parameter": []}
    try:
        async with database.write() as session:
            await session.execute(
                text(
                    "INSERT INTO subscriptions (id, url, secret, enabled, source, cursor_seq, "
                    "created_at, updated_at) VALUES (1, 'http://x', 'k', true, 'api', 0, :n, :n)"
                ),
                {"n": NOW},
            )
        first = 1
        for _ in range(rounds):
            for name, record in (("row by row", rowwise), ("one JSON parameter", batched)):
                runs[name].append(await timed(database, record, first))
                first += RESULTS
    finally:
        await database.dispose()
    return runs


def report(kind: str, runs: dict[str, list[tuple[float, float]]]) -> list[str]:
    base_rate = statistics.median(rate for rate, _ in runs["row by row"])
    base_cpu = statistics.median(cpu for _, cpu in runs["row by row"])
    lines = []
    for name, values in runs.items():
        rate = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        lines.append(
            f"| {kind} | {name} | {rate:,.0f}/s | {rate / base_rate:.2f} | {cpu:.1f} us "
            f"| {cpu / base_cpu:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = [
        f"{RESULTS:,} results in batches of {BATCH}, medians of {args.rounds} rounds "
        f"({platform.machine()}, Python {platform.python_version()})",
        "",
        "| database | recorded | results | ratio | loop thread CPU per result | ratio |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, url in fresh_databases(args.postgres_url, Path(tmp)):
            lines += report(kind, asyncio.run(measure(url, args.rounds)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
