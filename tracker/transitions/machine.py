"""The one state machine: every change of a job's state goes through `transition`.

Each change is a single conditional UPDATE whose WHERE clause holds the guard (allowed source
states, VOD event time not older than the job's), so two replicas applying the same outcome at
once change the row once: the database decides, not a read-before-write.

Statements: every function here takes a session and never commits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from tracker.db import insert
from tracker.models import FINAL, Job, JobState, Origin

S = JobState
# Allowed moves. Final states have none; `lost` can still learn its real outcome from VOD.
ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.SUBMITTING: frozenset(
        {S.PROCESSING, S.SUBMIT_FAILED, S.SUBMIT_UNKNOWN, S.SUCCEEDED, S.FAILED}
    ),
    S.SUBMIT_UNKNOWN: frozenset({S.PROCESSING, S.SUBMIT_FAILED, S.SUCCEEDED, S.FAILED, S.LOST}),
    S.PROCESSING: frozenset({S.SUCCEEDED, S.FAILED, S.LOST}),
    S.LOST: frozenset({S.PROCESSING, S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.SUBMIT_FAILED: frozenset(),
}


# VOD's CreateTime has whole seconds (vod-joblookup-reference.md 1), and its clock is not ours:
# a job counts as created after a submit attempt began if its CreateTime is no earlier than the
# attempt's second minus this. Recovery (tracker/scheduler/recover.py) and callbacks share it.
CREATE_SKEW = timedelta(seconds=5)

# States whose job may still learn its outcome: `mark_pending` marks only these.
NOT_FINAL = [state.value for state in JobState if state not in FINAL]


def waiting_for_job_id(jobs: Any = Job) -> ColumnElement[bool]:
    """Jobs a callback for an unknown JobId may resolve (with a matching media and type); `jobs`:
    the Job class, or an alias of its table.

    A `submitting` row too: the callback can beat the submitter's own commit of the JobId, or
    find the row a killed submitter left behind (tracker/submit/service.py).
    """
    columns = jobs if jobs is Job else jobs.c
    waiting = [S.SUBMIT_UNKNOWN.value, S.SUBMITTING.value]
    return and_(columns.state.in_(waiting), columns.job_id.is_(None))


def sources_of(target: JobState) -> list[str]:
    """The states from which `target` may be reached."""
    return [source.value for source, targets in ALLOWED.items() if target in targets]


async def transition(
    session: AsyncSession,
    where: ColumnElement[bool],
    target: JobState,
    now: datetime,
    **values: Any,
) -> int:
    """Move the jobs matching `where` to `target` where ALLOWED permits; return how many moved.

    Reaching a final state clears `stale` (keeping `stale_at`) and any pending confirmation.
    """
    changes: dict[str, Any] = {"state": target.value, "updated_at": now, **values}
    if target in FINAL:
        changes.setdefault("completed_at", now)
        changes.update(stale=False, pending_status=None, pending_since=None)
    result = await session.execute(
        update(Job)
        .where(where, Job.state.in_(sources_of(target)))
        .values(changes)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class Applied(StrEnum):
    """What `apply_outcome` did; the values double as the inbox's `reason` when not applied."""

    APPLIED = "applied"
    PROGRESS = "progress"
    CREATED = "created"
    RESOLVED = "resolved_submit_unknown"
    ALREADY_FINAL = "already_final"
    OLDER = "older_than_current"
    PENDING = "pending_confirmation"

    @property
    def changed(self) -> bool:
        return self in (Applied.APPLIED, Applied.PROGRESS, Applied.CREATED, Applied.RESOLVED)


@dataclass(frozen=True)
class Outcome:
    """What VOD says about one job, from a callback or from ListAIJob."""

    job_id: str
    type: str
    status: str  # VOD's: success, fail, init, processing (any case)
    media_id: str | None = None
    code: str | None = None
    message: str | None = None
    data: Any = None
    event_time: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime | None = None  # VOD's CreationTime, when its answer said (not a callback)

    @property
    def target(self) -> JobState | None:
        return {"success": S.SUCCEEDED, "fail": S.FAILED}.get(self.status.lower())


def _outcome_fields(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The columns an outcome sets on its job; a final one also its result and completion."""
    fields: dict[str, Any] = {
        "status": outcome.status.lower(),
        "code": outcome.code,
        "message": outcome.message,
        "event_time": outcome.event_time,
    }
    if outcome.target is not None:
        fields["result"] = outcome.data
        fields["completed_at"] = outcome.completed_at or now
    return fields


def _not_older(event_time: datetime | None) -> ColumnElement[bool]:
    if event_time is None:
        return Job.id.is_not(None)  # always true: an undated outcome is not "older"
    return or_(Job.event_time.is_(None), Job.event_time <= event_time)


async def apply_outcome(session: AsyncSession, outcome: Outcome, now: datetime) -> Applied:
    """Apply VOD's word on one job; idempotent on (JobId, outcome).

    `success`/`fail` make the job final unless it already is; `init`/`processing` only refresh it
    (and bring a `lost` job back). An outcome older than the job's last one changes nothing. A
    JobId we never saw resolves a `submit_unknown` (or still `submitting`) job of the same media
    and type, or else becomes a new job of origin `callback` (VOD runs DNA on its own after upload).
    """
    target = outcome.target
    fields = _outcome_fields(outcome, now)
    match = and_(Job.job_id == outcome.job_id, _not_older(outcome.event_time))

    if target is None:
        moved = await transition(
            session, match & (Job.state == S.LOST), S.PROCESSING, now, **fields
        )
        if moved:
            return Applied.PROGRESS
        refreshed = await session.execute(
            update(Job)
            .where(match, Job.state.in_([s.value for s in (S.PROCESSING, S.SUBMIT_UNKNOWN)]))
            .values(status=fields["status"], updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if refreshed.rowcount:  # type: ignore[attr-defined]
            return Applied.PROGRESS
    elif await transition(session, match, target, now, **fields):
        return Applied.APPLIED

    state = await session.scalar(select(Job.state).where(Job.job_id == outcome.job_id))
    if state is not None:
        return Applied.ALREADY_FINAL if state in FINAL else Applied.OLDER
    if await _resolve_submit_unknown(session, outcome, target, now, fields):
        return Applied.RESOLVED
    if await _insert_discovered(session, outcome, target, now, fields):
        return Applied.CREATED
    # Another writer created the job between our UPDATE and INSERT: apply to its row.
    return await apply_outcome(session, outcome, now)


async def _resolve_submit_unknown(
    session: AsyncSession,
    outcome: Outcome,
    target: JobState | None,
    now: datetime,
    fields: dict[str, Any],
) -> bool:
    if outcome.media_id is None:
        return False
    candidate = (
        select(Job.id)
        .where(
            Job.media_id == outcome.media_id,
            Job.type == outcome.type,
            waiting_for_job_id(),
            *_attempts_that_may_own(outcome),
        )
        .order_by(Job.submitted_at)
        .limit(1)
        .scalar_subquery()
    )
    where = and_(Job.id == candidate, Job.job_id.is_(None))
    return bool(
        await transition(
            session, where, target or S.PROCESSING, now, job_id=outcome.job_id, **fields
        )
    )


def _attempts_that_may_own(outcome: Outcome) -> list[ColumnElement[bool]]:
    """The rule recovery uses (`tracker.scheduler.recover.pick`): a job belongs to a submit
    attempt only if VOD created it after the attempt began (its second, less CREATE_SKEW) and
    before the next attempt of the media and type began (plus CREATE_SKEW). Otherwise a late
    callback of an older job, made by something else, would take the waiting row (issue 23,
    P3); it becomes a job of its own and the row is left to recovery.

    A callback does not say when its job was created, only when it happened (`event_time`),
    which is no earlier: an attempt that began after that cannot own the job either. The full
    rule needs VOD's answer, which confirmation asks for before anything is attached."""
    created = outcome.created_at or outcome.event_time
    if created is None:
        return []
    # floor(submitted_at) - SKEW <= created, with `created` in whole seconds as VOD writes it.
    rules = [Job.submitted_at < created.replace(microsecond=0) + CREATE_SKEW + timedelta(seconds=1)]
    if outcome.created_at is not None:
        later = aliased(Job)
        rules.append(
            ~exists().where(
                later.media_id == Job.media_id,
                later.type == Job.type,
                later.origin == Origin.SUBMITTED.value,
                later.submitted_at > Job.submitted_at,
                later.submitted_at <= outcome.created_at - CREATE_SKEW,
            )
        )
    return rules


async def _awaits_job_id(session: AsyncSession, outcome: Outcome) -> bool:
    """Whether a job of the outcome's media and type waits for a JobId (`waiting_for_job_id`)."""
    if outcome.media_id is None:
        return False
    waiting = await session.scalar(
        select(Job.id)
        .where(Job.media_id == outcome.media_id, Job.type == outcome.type, waiting_for_job_id())
        .limit(1)
    )
    return waiting is not None


async def _insert_discovered(
    session: AsyncSession,
    outcome: Outcome,
    target: JobState | None,
    now: datetime,
    fields: dict[str, Any],
) -> bool:
    row = {
        "job_id": outcome.job_id,
        "media_id": outcome.media_id or "",
        "type": outcome.type,
        "state": (target or S.PROCESSING).value,
        "origin": Origin.CALLBACK.value,
        "stale": False,
        "submitted_at": outcome.event_time or now,
        "updated_at": now,
        **fields,
    }
    if target is None:
        row["completed_at"] = None
    result = await session.execute(
        insert(session, Job).values(row).on_conflict_do_nothing(index_elements=["job_id"])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_pending(session: AsyncSession, outcome: Outcome, now: datetime) -> Applied:
    """Record a callback's terminal outcome on its job as awaiting confirmation; idempotent.

    Nothing becomes final here: `pending_status` takes the outcome's status and `pending_since`
    keeps the first time one was recorded, until reconciliation applies VOD's own answer through
    `apply_outcome` (which clears both). A final job is left alone. A JobId we never saw changes
    no job while one of its media and type waits for a JobId (only VOD's answer may resolve that
    job); otherwise it is first learned as `processing` (undated, so VOD's later answer is never
    judged older), then marked.
    Non-terminal outcomes finalise nothing and are applied directly.
    """
    if outcome.target is None:
        return await apply_outcome(session, outcome, now)
    mark = (
        update(Job)
        .where(Job.job_id == outcome.job_id, Job.state.in_(NOT_FINAL))
        .values(
            pending_status=outcome.status.lower(),
            pending_since=func.coalesce(Job.pending_since, now),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if (await session.execute(mark)).rowcount:  # type: ignore[attr-defined]
        return Applied.PENDING
    state = await session.scalar(select(Job.state).where(Job.job_id == outcome.job_id))
    if state is not None:
        return Applied.ALREADY_FINAL
    if await _awaits_job_id(session, outcome):
        # The body is unsigned, so it could name any JobId: a job waiting for its JobId takes
        # one only from VOD's own answer. The event stays pending, and reconciliation asks VOD
        # about its JobId (tracker/scheduler/reconcile.py), whose answer resolves the job.
        return Applied.PENDING
    # Learned by an INSERT alone, never through `apply_outcome`, which could resolve a job that
    # began waiting meanwhile. If another writer inserted it first, the mark finds its row.
    learned = replace(
        outcome, status="processing", code=None, message=None, data=None, event_time=None
    )
    fields = {"status": learned.status, "code": None, "message": None, "event_time": None}
    await _insert_discovered(session, learned, None, now, fields)
    return await mark_pending(session, outcome, now)


async def adopt_job_id(session: AsyncSession, row_id: int, outcome: Outcome, now: datetime) -> bool:
    """Give the job `row_id`, still waiting for its JobId (`submitting` or `submit_unknown`, no
    JobId), the job VOD has for it, in VOD's state: `processing` until `success`/`fail`.

    Guarded in the WHERE clause: the row must still be waiting and no other row may hold the
    JobId, so a callback or a submitter that got there first wins and this changes nothing. A
    row inserted with the same JobId concurrently is stopped by the unique index (the caller's
    transaction fails and changes nothing).
    """
    held = aliased(Job)
    where = and_(
        Job.id == row_id,
        waiting_for_job_id(),
        ~exists().where(held.job_id == outcome.job_id),
    )
    target = outcome.target or S.PROCESSING
    fields = _outcome_fields(outcome, now)
    return bool(await transition(session, where, target, now, job_id=outcome.job_id, **fields))


async def give_up_submit(
    session: AsyncSession, row_id: int, now: datetime, *, code: str, message: str
) -> bool:
    """The job `row_id`, still waiting for its JobId, becomes `submit_failed`: final, and no
    longer blocking a new submission of its media and type. Guarded like `adopt_job_id`: a row
    that learned its JobId meanwhile is left alone."""
    where = and_(Job.id == row_id, waiting_for_job_id())
    return bool(await transition(session, where, S.SUBMIT_FAILED, now, code=code, message=message))
