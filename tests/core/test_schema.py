"""The migrations build the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from tests.factories import add_rows, new_job
from tracker.db import Database, head_revision
from tracker.models import Base, Job


def _diff(sync_conn: object) -> list[object]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})  # type: ignore[arg-type]
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_match_models(database: Database) -> None:
    async with database.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
    assert await database.revision() == head_revision()


async def test_timestamps_round_trip_as_aware_utc(database: Database) -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    await add_rows(database, new_job(media_id="m1", at=when, result={"Keyword": [{"Tag": "cat"}]}))
    async with database.session() as session:
        job = await session.scalar(select(Job))
    assert job is not None
    assert job.submitted_at == when
    assert job.submitted_at.tzinfo is not None
    assert job.result == {"Keyword": [{"Tag": "cat"}]}
    assert job.stale is False
