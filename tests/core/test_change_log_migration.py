"""Migration 0005: the change log's triggers write what 0004's wrote (stale flags dated when
flagged), and its downgrade puts 0004's triggers back; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    name = f"changelog_{uuid.uuid4().hex[:12]}"
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


def _execute(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run the statements in one transaction; the rows of the last."""

    async def run() -> list[tuple[Any, ...]]:
        engine = create_async_engine(url)
        rows: list[tuple[Any, ...]] = []
        try:
            async with engine.begin() as conn:
                for statement in statements:
                    result = await conn.execute(text(statement))
                    rows = [tuple(row) for row in result] if result.returns_rows else []
        finally:
            await engine.dispose()
        return rows

    return asyncio.run(run())


def _definitions(url: str) -> list[tuple[Any, ...]]:
    """The change log's triggers, trigger functions and indexes, as the database states them."""
    if url.startswith("sqlite"):
        return _execute(
            url,
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('trigger', 'index') "
            "AND tbl_name IN ('jobs', 'job_changes') ORDER BY type, name",
        )
    return _execute(
        url,
        "SELECT 'function', proname, pg_get_functiondef(oid) FROM pg_proc "
        "WHERE proname LIKE 'tracker_%' UNION ALL "
        "SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
        "UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes "
        "WHERE tablename IN ('jobs', 'job_changes') ORDER BY 1, 2",
    )


def test_the_downgrade_puts_the_triggers_of_0004_back(empty_url: str) -> None:
    command.upgrade(alembic_config(empty_url), "0004")
    before = _definitions(empty_url)
    command.upgrade(alembic_config(empty_url), "0005")
    after = _definitions(empty_url)
    assert after != before
    assert "ix_job_changes_media_id_seq" in {name for _, name, _ in before}
    assert "ix_job_changes_media_id_seq" not in {name for _, name, _ in after}
    command.downgrade(alembic_config(empty_url), "0004")
    assert _definitions(empty_url) == before


def _changes_of(url: str, job_id: str) -> list[dict[str, Any]]:
    """Insert a job, finish it with a result, insert another and flag it stale; the changes."""
    stale_id = f"{job_id}-stale"
    rows = _execute(
        url,
        "INSERT INTO jobs (job_id, media_id, type, state, origin, stale, submitted_at, "
        f"updated_at) VALUES ('{job_id}', '{job_id}-m1', 'AIVideoTag', 'processing', "
        "'submitted', false, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        "UPDATE jobs SET state = 'succeeded', status = 'success', code = '0', message = 'OK', "
        """result = '{"Keyword": [{"Tag": "cat", "Times": ["1"]}], "x": null}', """
        "updated_at = '2026-01-01 00:05:00', completed_at = '2026-01-01 00:04:00' "
        f"WHERE job_id = '{job_id}'",
        "INSERT INTO jobs (job_id, media_id, type, region, state, origin, stale, submitted_at, "
        f"updated_at) VALUES ('{stale_id}', '{job_id}-m2', 'AIMediaDNA', 'cn-shanghai', "
        "'processing', 'submitted', false, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        "UPDATE jobs SET stale = true, stale_at = '2026-01-01 02:00:00' "
        f"WHERE job_id = '{stale_id}'",
        "SELECT type, job_id, media_id, previous_state, state, occurred_at, data "
        f"FROM job_changes WHERE job_id IN ('{job_id}', '{stale_id}') ORDER BY seq",
    )
    found = []
    for type_, found_id, media_id, previous, state, occurred_at, data in rows:
        # SQLite hands the snapshot back as its text, compared as text (keys' order and
        # spelling too); PostgreSQL as the value of the jsonb.
        snapshot = json.loads(json.dumps(data).replace(job_id, "JOB"))
        found.append(
            {
                "type": type_,
                "job_id": found_id.replace(job_id, "JOB"),
                "media_id": media_id.replace(job_id, "JOB"),
                "previous_state": previous,
                "state": state,
                "occurred_at": str(occurred_at),
                "data": snapshot,
            }
        )
    return found


def test_0005_writes_the_changes_0004_wrote(empty_url: str) -> None:
    command.upgrade(alembic_config(empty_url), "0004")
    old = _changes_of(empty_url, "old")
    command.upgrade(alembic_config(empty_url), "0005")
    new = _changes_of(empty_url, "new")
    types = ["job.submitted", "job.succeeded", "job.submitted", "job.stale"]
    assert [c["type"] for c in new] == types
    # The one difference: a stale flag is dated when it was set, not by the job's last update.
    assert old[3]["occurred_at"].startswith("2026-01-01 00:00:00")
    assert new[3]["occurred_at"].startswith("2026-01-01 02:00:00")
    for change in (old[3], new[3]):
        del change["occurred_at"]
    assert new == old
