"""Migration 0002: existing jobs get the configured region, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import POSTGRES_URL
from tracker.db import alembic_config


@pytest.fixture
def empty_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of its own: a file, or a new database on the test PostgreSQL server."""
    if not POSTGRES_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    name = f"regions_{uuid.uuid4().hex[:12]}"
    admin = make_url(POSTGRES_URL)

    async def run(statement: str) -> None:
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(statement))
        await engine.dispose()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(run(f"DROP DATABASE {name}"))


def _execute(url: str, statement: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            result = await conn.execute(text(statement))
            rows = [tuple(row) for row in result] if result.returns_rows else []
        await engine.dispose()
        return rows

    return asyncio.run(run())


def test_existing_jobs_take_the_configured_region(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    command.upgrade(alembic_config(empty_url), "0001")
    _execute(
        empty_url,
        "INSERT INTO jobs (job_id, media_id, type, state, origin, stale, submitted_at, "
        "updated_at) VALUES ('j1', 'm1', 'AIVideoTag', 'processing', 'submitted', false, "
        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    )
    monkeypatch.setenv("TRACKER_VOD_REGION", "cn-beijing")
    command.upgrade(alembic_config(empty_url), "0002")
    assert _execute(empty_url, "SELECT job_id, region FROM jobs") == [("j1", "cn-beijing")]
    command.downgrade(alembic_config(empty_url), "0001")
    assert _execute(empty_url, "SELECT job_id FROM jobs") == [("j1",)]
