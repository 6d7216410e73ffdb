"""The change log: one `job_changes` row per change of a job's state or stale flag.

The rows are written by triggers on `jobs` (migration 0003), in the transaction of the change and
by whatever statement made it: the one-by-one transitions, the set-based ones, the sweep,
reconciliation and the submitter alike, so no path can change a job without its row. On SQLite
they are row triggers (SQLite has no other kind); on PostgreSQL statement triggers over the
transition tables, one INSERT per statement. A state change is typed by the new state
(`processing` is `job.submitted`: a JobId is known); a stale flag turned on without a state
change is `job.stale`. Reaching a final state also clears the flag: that is one change, typed by
the state.

`seq` orders the log as it was committed. On SQLite the single writer commits in id order and
`seq` is the id; on PostgreSQL `seq` is drawn at commit under a transaction lock, so a reader
that has seen `seq` N never later sees a change below N appear (the cursor of `GET /changes`,
the SSE stream and the relay's fan-out rely on it). Until its commit a change has no `seq`.

Statements here take a session and never commit; `prune_changes` is a flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import iso
from tracker.db import Database
from tracker.models import Delivery, Job, JobChange

CHANGE_TYPES = (
    "job.submitted",
    "job.submit_failed",
    "job.submit_unknown",
    "job.succeeded",
    "job.failed",
    "job.lost",
    "job.stale",
)
NOTIFY_CHANNEL = "tracker_job_changes"  # PostgreSQL: the sequencing trigger notifies it
DELETE_CHUNK = 5_000
MAX_DELETE_CHUNKS = 2_000
MAX_PAGE = 1_000
DEFAULT_PAGE = 100


def _time(value: object) -> str | None:
    """A snapshot's time (SQLite text, PostgreSQL ISO with offset) as the API shows times."""
    if value is None:
        return None
    return iso(datetime.fromisoformat(str(value)))


def job_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The job of a change as `GET /jobs/{id}` shows it (tracker/api/routes.py `job_json`)."""
    body: dict[str, Any] = {
        "job_id": snapshot.get("job_id"),
        "media_id": snapshot.get("media_id"),
        "type": snapshot.get("type"),
        "region": snapshot.get("region"),
        "state": snapshot.get("state"),
        "stale": bool(snapshot.get("stale")),
        "stale_at": _time(snapshot.get("stale_at")),
        "origin": snapshot.get("origin"),
        "status": snapshot.get("status"),
        "code": snapshot.get("code"),
        "message": snapshot.get("message"),
        "result": snapshot.get("result"),
        "submitted_at": _time(snapshot.get("submitted_at")),
        "updated_at": _time(snapshot.get("updated_at")),
        "completed_at": _time(snapshot.get("completed_at")),
    }
    if snapshot.get("pending_status") is not None:
        body["pending_status"] = snapshot["pending_status"]
        body["pending_since"] = _time(snapshot.get("pending_since"))
    return body


def change_json(change: JobChange) -> dict[str, Any]:
    """One change as the feed, the stream and the webhooks carry it: `{seq, type, timestamp,
    data}`, `data` being the job then, plus `seq` and `previous_state`."""
    data = job_of(change.data)
    data["seq"] = change.seq
    data["previous_state"] = change.previous_state
    return {
        "seq": change.seq,
        "type": change.type,
        "timestamp": _time(change.occurred_at.isoformat()),
        "data": data,
    }


@dataclass(frozen=True)
class ChangeFilter:
    types: tuple[str, ...] = ()
    media_id: str | None = None
    job_row_id: int | None = None


async def list_changes(
    session: AsyncSession, after: int, limit: int, where: ChangeFilter = ChangeFilter()
) -> Sequence[JobChange]:
    """Committed changes with `seq > after`, in `seq` order."""
    query = (
        select(JobChange)
        .where(JobChange.seq > after)
        .order_by(JobChange.seq)
        .limit(min(limit, MAX_PAGE))
    )
    if where.types:
        query = query.where(JobChange.type.in_(where.types))
    if where.media_id is not None:
        # Through the media's jobs (a job keeps its media): job_changes has no media index.
        jobs = select(Job.id).where(Job.media_id == where.media_id)
        query = query.where(JobChange.job_row_id.in_(jobs), JobChange.media_id == where.media_id)
    if where.job_row_id is not None:
        query = query.where(JobChange.job_row_id == where.job_row_id)
    return list(await session.scalars(query))


async def latest_seq(session: AsyncSession) -> int:
    """The highest committed `seq`, 0 if none."""
    return int(await session.scalar(select(func.max(JobChange.seq))) or 0)


async def oldest_seq(session: AsyncSession) -> int | None:
    """The lowest `seq` still retained, None if the log is empty."""
    value = await session.scalar(select(func.min(JobChange.seq)))
    return None if value is None else int(value)


async def is_pruned(session: AsyncSession, after: int) -> bool:
    """True when changes after `after` have been pruned: the cursor is older than the log.

    Judged by the oldest retained `seq`: `seq` has no gaps on SQLite, and on PostgreSQL only a
    transaction that failed in its commit leaves one.
    """
    oldest = await oldest_seq(session)
    if oldest is None:
        return after < await _pruned_upto(session)
    return after + 1 < oldest


async def _pruned_upto(session: AsyncSession) -> int:
    # An empty log: everything ever numbered was pruned (or nothing was ever written).
    if session.get_bind().dialect.name == "postgresql":
        sequence: ColumnElement[Any] = literal_column("'job_changes_seq'::regclass")
        return int(await session.scalar(select(func.pg_sequence_last_value(sequence))) or 0)
    raw = await session.connection()
    found = await raw.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'job_changes'")
    row = found.first()
    return int(row[0]) if row else 0


async def prune_changes(database: Database, before: datetime) -> int:
    """Delete the changes up to the last one that happened before `before`, and their
    deliveries; idempotent.

    A prefix of the log by `seq`, so a reader's cursor meets no hole: a change numbered before
    an older one goes with it. Deliveries go with their change: by then
    (TRACKER_EVENT_RETENTION, 30 days by default) the retry schedule (about 27 h) is long over.
    """
    async with database.session() as session:
        upto = await session.scalar(
            select(func.max(JobChange.seq)).where(JobChange.occurred_at < before)
        )
    if upto is None:
        return 0
    deleted = 0
    for _ in range(MAX_DELETE_CHUNKS):
        async with database.write() as session:
            seqs = list(
                await session.scalars(
                    select(JobChange.seq)
                    .where(JobChange.seq <= upto)
                    .order_by(JobChange.seq)
                    .limit(DELETE_CHUNK)
                )
            )
            if seqs:
                await session.execute(
                    delete(Delivery)
                    .where(Delivery.change_seq.in_(seqs))
                    .execution_options(synchronize_session=False)
                )
                await session.execute(
                    delete(JobChange)
                    .where(JobChange.seq.in_(seqs))
                    .execution_options(synchronize_session=False)
                )
        deleted += len(seqs)
        if len(seqs) < DELETE_CHUNK:
            break
    return deleted
