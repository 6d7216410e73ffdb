"""The state machine for many outcomes at once: the guards of `machine`, set-based.

The common cases of a batch cost a few statements whatever its size; everything else, and the
loser of any race, goes through the one-outcome functions of `machine`.

Statements: every function here takes a session and never commits.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Insert,
    Table,
    Update,
    bindparam,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import db_time, insert, json_rows, rows_json
from tracker.models import FINAL, Job, Origin
from tracker.transitions.machine import (
    NOT_FINAL,
    Applied,
    Outcome,
    S,
    apply_outcome,
    mark_pending,
    sources_of,
    waiting_for_job_id,
)

JOBS = cast(Table, Job.__table__)
# The columns the set-based statements take from each outcome row, as the jobs table types them.
OUTCOME_COLUMNS: dict[str, Any] = {
    name: JOBS.c[name].type
    for name in (
        "job_id",
        "media_id",
        "type",
        "state",
        "status",
        "code",
        "message",
        "result",
        "event_time",
        "completed_at",
        "submitted_at",
        "pending_status",
        "pending_since",
    )
}
# The statements below are built once per dialect (building one costs more than running it):
# the time of the change travels as this parameter.
NOW = bindparam("now", type_=JOBS.c.updated_at.type)


async def apply_outcomes(
    session: AsyncSession, outcomes: Sequence[Outcome], now: datetime
) -> list[Applied]:
    """`apply_outcome` for many outcomes of distinct jobs, with the same guards and results.

    The common cases are set-based, a few statements whatever the count: terminal outcomes of
    known jobs in one conditional UPDATE (the guard of `transition`), JobIds never seen with no
    `submit_unknown` job to resolve created by one INSERT, and jobs that did neither classified
    by one SELECT. Everything else, and the loser of any race, goes through `apply_outcome` one
    by one.
    """
    if len({o.job_id for o in outcomes}) != len(outcomes):
        raise ValueError("apply_outcomes takes one outcome per job")
    dialect = session.get_bind().dialect.name
    results: dict[str, Applied] = {}
    terminal = [o for o in outcomes if o.target is not None]
    rows = outcome_rows(terminal, now, dialect)
    if terminal:
        moved = await session.scalars(
            finish_many(dialect), {"outcomes": rows_json(rows.values()), "now": now}
        )
        results.update({job_id: Applied.APPLIED for job_id in moved if job_id})
    rest = [o for o in terminal if o.job_id not in results]
    if rest:
        results.update(await _create_unseen(session, rest, rows, now, dialect))
    left = [o for o in rest if o.job_id not in results]
    if left:
        found = await session.execute(
            select(Job.job_id, Job.state).where(Job.job_id.in_([o.job_id for o in left]))
        )
        states = {job_id: state for job_id, state in found}
        for o in left:
            if (state := states.get(o.job_id)) is not None:
                results[o.job_id] = Applied.ALREADY_FINAL if state in FINAL else Applied.OLDER
    for o in outcomes:  # non-terminal outcomes, the unresolved and the races: one by one
        if o.job_id not in results:
            results[o.job_id] = await apply_outcome(session, o, now)
    return [results[o.job_id] for o in outcomes]


async def _create_unseen(
    session: AsyncSession,
    outcomes: list[Outcome],
    rows: dict[str, Any],
    now: datetime,
    dialect: str,
    result: Applied = Applied.CREATED,
) -> dict[str, Applied]:
    """Insert `rows` as jobs of origin `callback`: those of the JobIds never seen whose media
    and type have no `submit_unknown`/`submitting` job waiting for a JobId (resolved one by
    one by the caller); one statement."""
    created = await session.scalars(
        create_many(dialect), {"outcomes": rows_json(rows[o.job_id] for o in outcomes), "now": now}
    )
    return {job_id: result for job_id in created if job_id}


@functools.cache
def create_many(dialect: str) -> Insert:
    """INSERT the `outcomes` rows as jobs of origin `callback`, those whose JobId is new."""
    batch = json_rows("outcomes", OUTCOME_COLUMNS, dialect)
    columns = list(OUTCOME_COLUMNS)
    waiting = JOBS.alias("waiting")
    statement: Insert = (
        insert(dialect, JOBS)
        .from_select(
            [*columns, "origin", "stale", "updated_at"],
            select(
                *(batch.c[name] for name in columns),
                literal(Origin.CALLBACK.value),
                false(),
                NOW,
            ).where(  # (a WHERE SQLite needs anyway to parse INSERT ... SELECT ... ON CONFLICT)
                or_(
                    batch.c.media_id == "",
                    ~exists().where(
                        waiting.c.media_id == batch.c.media_id,
                        waiting.c.type == batch.c.type,
                        waiting_for_job_id(waiting),
                    ),
                )
            ),
        )
        .on_conflict_do_nothing(index_elements=["job_id"])
        .returning(Job.job_id)
    )
    return statement


@functools.cache
def finish_many(dialect: str) -> Update:
    """`transition` to each terminal outcome's state for the jobs of the `outcomes` rows, with
    its guard: allowed source states, and no outcome older than the job's."""
    batch = json_rows("outcomes", OUTCOME_COLUMNS, dialect)
    return (
        update(JOBS)
        .where(
            JOBS.c.job_id == batch.c.job_id,
            # An expression rather than the bare column, so that SQLite (no statistics) looks
            # each job up by JobId instead of scanning every job in these states.
            JOBS.c.state.concat("").in_(sources_of(S.SUCCEEDED)),  # the same for FAILED
            or_(
                JOBS.c.event_time.is_(None),
                batch.c.event_time.is_(None),
                JOBS.c.event_time <= batch.c.event_time,
            ),
        )
        .values(
            state=batch.c.state,
            status=batch.c.status,
            code=batch.c.code,
            message=batch.c.message,
            result=batch.c.result,
            event_time=batch.c.event_time,
            completed_at=batch.c.completed_at,
            updated_at=NOW,
            stale=False,
            pending_status=None,
            pending_since=None,
        )
        .returning(JOBS.c.job_id)
    )


@functools.cache
def mark_many(dialect: str) -> Update:
    """`mark_pending`'s UPDATE for the jobs of the `outcomes` rows: unfinished jobs only, and
    `pending_since` keeps the first time."""
    batch = json_rows("outcomes", OUTCOME_COLUMNS, dialect)
    return (
        update(JOBS)
        .where(
            JOBS.c.job_id == batch.c.job_id,
            JOBS.c.state.concat("").in_(NOT_FINAL),  # by JobId on SQLite: see finish_many
        )
        .values(
            pending_status=batch.c.pending_status,
            pending_since=func.coalesce(JOBS.c.pending_since, NOW),
            updated_at=NOW,
        )
        .returning(JOBS.c.job_id)
    )


def outcome_rows(outcomes: Sequence[Outcome], now: datetime, dialect: str) -> dict[str, Any]:
    """`json_rows` rows for terminal outcomes by JobId, as `apply_outcome` would write them."""
    sqlite_ = dialect != "postgresql"
    at_now = db_time(now, dialect)
    rows = {}
    for o in outcomes:
        target = o.target
        assert target is not None
        event_time = db_time(o.event_time, dialect)
        completed_at = db_time(o.completed_at, dialect) if o.completed_at else None
        rows[o.job_id] = {
            "job_id": o.job_id,
            "media_id": o.media_id or "",
            "type": o.type,
            "state": target.value,
            "status": o.status.lower(),
            "code": o.code,
            "message": o.message,
            # SQLite keeps JSON columns as text; a JSON null is what the ORM writes for None.
            "result": json.dumps(o.data) if sqlite_ else o.data,
            "event_time": event_time,
            "completed_at": completed_at or at_now,
            "submitted_at": event_time or at_now,
            "pending_status": None,
            "pending_since": None,
        }
    return rows


async def mark_pending_many(
    session: AsyncSession, outcomes: Sequence[Outcome], now: datetime
) -> list[Applied]:
    """`mark_pending` for many outcomes of distinct jobs, with the same results.

    Set-based for the common cases: terminal outcomes of unfinished jobs marked by one UPDATE,
    final jobs found by one SELECT, and JobIds never seen with no job waiting for them created
    by one INSERT as `processing` jobs already marked. The rest go through `mark_pending`.
    """
    if len({o.job_id for o in outcomes}) != len(outcomes):
        raise ValueError("mark_pending_many takes one outcome per job")
    dialect = session.get_bind().dialect.name
    results: dict[str, Applied] = {}
    terminal = [o for o in outcomes if o.target is not None]
    if terminal:
        marked = await session.scalars(
            mark_many(dialect),
            {
                "outcomes": rows_json(
                    {"job_id": o.job_id, "pending_status": o.status.lower()} for o in terminal
                ),
                "now": now,
            },
        )
        results.update({job_id: Applied.PENDING for job_id in marked if job_id})
    rest = [o for o in terminal if o.job_id not in results]
    if rest:
        found = await session.execute(
            select(Job.job_id).where(Job.job_id.in_([o.job_id for o in rest]))
        )
        results.update({job_id: Applied.ALREADY_FINAL for (job_id,) in found if job_id})
        unseen = [o for o in rest if o.job_id not in results]
        if unseen:
            at_now = db_time(now, dialect)
            learned = {
                o.job_id: {
                    "job_id": o.job_id,
                    "media_id": o.media_id or "",
                    "type": o.type,
                    "state": S.PROCESSING.value,
                    "status": "processing",
                    "submitted_at": at_now,
                    "pending_status": o.status.lower(),
                    "pending_since": at_now,
                }
                for o in unseen
            }
            results.update(
                await _create_unseen(session, unseen, learned, now, dialect, Applied.PENDING)
            )
    for o in outcomes:  # non-terminal outcomes, the unresolved and the races: one by one
        if o.job_id not in results:
            results[o.job_id] = await mark_pending(session, o, now)
    return [results[o.job_id] for o in outcomes]
