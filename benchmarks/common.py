"""What the benchmarks share: free loopback ports, fresh databases, row counts, percentiles."""

from __future__ import annotations

import asyncio
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_database(kind: str, postgres_url: str | None, workdir: Path) -> str:
    """A new SQLite file in `workdir`, or the PostgreSQL database emptied, at the head schema."""
    from tracker.db import upgrade

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        upgrade(url)
        return url
    assert postgres_url is not None
    upgrade(postgres_url)
    asyncio.run(truncate(postgres_url))
    return postgres_url


def fresh_databases(postgres_url: str | None, workdir: Path) -> Iterator[tuple[str, str]]:
    """(kind, url): a fresh SQLite file, then the PostgreSQL database emptied when a URL is given,
    each made when the loop comes to it."""
    for kind in ["sqlite"] + (["postgresql"] if postgres_url else []):
        yield kind, fresh_database(kind, postgres_url, workdir)
        print(f"{kind} done", file=sys.stderr)


async def truncate(url: str) -> None:
    """Empty every table of a PostgreSQL database, ids restarting at 1."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from tracker.models import Base

    engine = create_async_engine(url)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


async def count_rows(url: str) -> int:
    """Stored callback events: what was acknowledged must be there."""
    from sqlalchemy import func, select

    from tracker.db import Database
    from tracker.ingest.pending import EVENTS

    database = Database(url)
    try:
        async with database.session() as session:
            return int(await session.scalar(select(func.count()).select_from(EVENTS)) or 0)
    finally:
        await database.dispose()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
