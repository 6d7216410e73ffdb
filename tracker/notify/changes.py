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

Statements here take a session and never commit; tracker/scheduler/retention.py prunes the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import iso
from tracker.models import Job, JobChange
from tracker.shapes import Change, ChangedJob, job_json

NOTIFY_CHANNEL = "tracker_job_changes"  # PostgreSQL: the sequencing trigger notifies it
MAX_PAGE = 1_000
DEFAULT_PAGE = 100


@dataclass(slots=True)  # not frozen: a frozen init costs a setattr call per field, per change
class Snapshot:
    """A change's `data`, the `jobs` row as the trigger copied it (migration 0004), read back as
    the row it copies, so that `job_json` builds the job of a change as it builds a job."""

    job_id: str | None
    media_id: str
    type: str
    region: str | None
    state: str
    stale: bool
    stale_at: datetime | None
    origin: str
    status: str | None
    code: str | None
    message: str | None
    result: Any
    submitted_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    pending_status: str | None
    pending_since: datetime | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            job_id=data.get("job_id"),
            media_id=data["media_id"],
            type=data["type"],
            region=data.get("region"),
            state=data["state"],
            stale=bool(data.get("stale")),  # SQLite's JSON has 0 and 1
            stale_at=_time(data.get("stale_at")),
            origin=data["origin"],
            status=data.get("status"),
            code=data.get("code"),
            message=data.get("message"),
            result=data.get("result"),
            submitted_at=_time(data["submitted_at"]),
            updated_at=_time(data["updated_at"]),
            completed_at=_time(data.get("completed_at")),
            pending_status=data.get("pending_status"),
            pending_since=_time(data.get("pending_since")),
        )


@overload
def _time(value: str) -> datetime: ...
@overload
def _time(value: str | None) -> datetime | None: ...
def _time(value: str | None) -> datetime | None:
    """A snapshot's time: SQLite's text (UTC, no offset) or PostgreSQL's ISO with an offset."""
    return None if value is None else datetime.fromisoformat(value)


def change_json(change: JobChange) -> Change:
    """One change as the feed, the stream and the webhooks carry it: `{seq, type, timestamp,
    data}`, `data` being the job then (`job_json`), plus `seq` and `previous_state`."""
    seq = change.seq
    assert seq is not None, "only committed changes are shown"  # list_changes reads those
    data: ChangedJob = {
        **job_json(Snapshot.of(change.data)),
        "seq": seq,
        "previous_state": change.previous_state,
    }
    return {"seq": seq, "type": change.type, "timestamp": iso(change.occurred_at), "data": data}


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
