"""Statements: a submission's rows, claimed (media, type) before VOD is called, then its answer.

Claims and records work on many media at once (one statement per step, not per media), because
the batch submitter groups the claims and answers of its concurrent workers into one transaction
each. Two submitters of the same media and type race on the unique index
`uq_jobs_media_id_type_submitted` (tracker/models/jobs.py): only one of them gets the row.

Every function here takes a session and never commits (`service.py` and `batch.py` do).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import insert
from tracker.errors import TrackerError
from tracker.models import Job, JobState, Origin, Submission, SubmissionState
from tracker.submit.budget import (
    UNLIMITED,
    Budget,
    BudgetExceeded,
    day_of,
    release,
    reserve,
    video_ms,
)
from tracker.transitions import transition
from tracker.vod import SubmitResult, VodError

log = logging.getLogger(__name__)
S = JobState


@dataclass(frozen=True)
class SubmitRequest:
    """One media and the AI types to run on it, already validated (tracker/submit/service.py)."""

    media_id: str
    types: tuple[str, ...]
    config: dict[str, Any] | None = None
    user_data: dict[str, Any] | None = None
    # The VOD region to submit in; None: the region of the client it is sent with
    # (tracker.submit.service.submit_media fills it in before anything is claimed).
    region: str | None = None
    # Seconds of video, from VOD's GetVideoInfo(s) (tracker/submit/durations.py): what the
    # budget counts, stored on the jobs.
    duration_s: float | None = None


@dataclass
class Claim:
    media_id: str
    submission_id: int | None
    rows: dict[str, int]  # type -> jobs.id of the `submitting` rows we own
    blocked: dict[str, Job]  # type -> the job that made it a duplicate
    # Milliseconds of video reserved per type of `rows`, on `day` (tracker/submit/budget.py).
    reserved: dict[str, int] = field(default_factory=dict)
    day: date | None = None
    # The budget refused the whole submission: nothing was claimed, nothing may be sent.
    refused: BudgetExceeded | None = None


@dataclass(frozen=True)
class Refusal:
    """VOD refused (or was never reached, or the outcome is unknown): the claimed jobs go to
    `target` with this error's code."""

    error: TrackerError
    target: JobState


Answer = SubmitResult | Refusal


async def blocking_jobs(
    session: AsyncSession, media_ids: Sequence[str], types: Sequence[str]
) -> dict[tuple[str, str], Job]:
    """Jobs that make a new submission of (media, type) a duplicate, by (media, type): live or
    done, not replaced.

    Origin `callback` counts too (VOD runs DNA on its own after upload); only the submitted ones
    are also held by the unique index, which is what decides a race.
    """
    query = select(Job).where(
        Job.media_id.in_(media_ids),
        Job.type.in_(types),
        Job.state != S.SUBMIT_FAILED.value,
        Job.superseded_at.is_(None),
    )
    found: dict[tuple[str, str], Job] = {}
    for job in await session.scalars(query):
        found.setdefault((job.media_id, job.type), job)
    return found


async def jobs_by_row_id(session: AsyncSession, ids: Sequence[int]) -> list[Job]:
    """The jobs of these row ids (a claim's), as they are now."""
    return list(await session.scalars(select(Job).where(Job.id.in_(list(ids)))))


async def claim_many(
    session: AsyncSession,
    requests: Sequence[SubmitRequest],
    now: datetime,
    *,
    force: bool = False,
    read: bool = True,
    budget: Budget = UNLIMITED,
) -> list[Claim]:
    """Record a submission and one `submitting` job per type that is not live or done; one
    Claim per request, in order.

    Idempotent on (media, type): the INSERT skips any pair the unique index already holds, so
    of two concurrent claims only one owns each row. `force` first retires the current jobs.
    `read=False` trusts the caller to have looked for jobs of origin `callback` already. The
    video of the types to claim is reserved in `budget` first (tracker/submit/budget.py): a
    request over budget claims nothing and changes nothing (its Claim says `refused`).
    """
    claims: list[Claim | None] = [None] * len(requests)
    for wave in _waves(requests):
        done = await _claim_wave(session, [requests[i] for i in wave], now, force, read, budget)
        for index, claim in zip(wave, done, strict=True):
            claims[index] = claim
    return [claim for claim in claims if claim is not None]


def _waves(requests: Sequence[SubmitRequest]) -> list[list[int]]:
    """Indexes split into waves without a repeated media id (one statement per wave)."""
    waves: list[list[int]] = []
    seen: list[set[str]] = []
    for index, request in enumerate(requests):
        for wave, media in zip(waves, seen, strict=True):
            if request.media_id not in media:
                wave.append(index)
                media.add(request.media_id)
                break
        else:
            waves.append([index])
            seen.append({request.media_id})
    return waves


async def _claim_wave(
    session: AsyncSession,
    requests: Sequence[SubmitRequest],
    now: datetime,
    force: bool,
    read: bool,
    budget: Budget,
) -> list[Claim]:
    media_ids = [r.media_id for r in requests]
    blocked: dict[tuple[str, str], Job] = {}
    if read and not force:
        blocked = await blocking_jobs(session, media_ids, _all_types(requests))
    wanted = {r.media_id: [t for t in r.types if (r.media_id, t) not in blocked] for r in requests}
    asking = [r for r in requests if wanted[r.media_id]]
    # The budget first: a refused request must leave no trace, its old jobs not superseded.
    ms = {r.media_id: video_ms(r.duration_s) for r in asking}
    verdicts = await reserve(
        session, budget, [dict.fromkeys(wanted[r.media_id], ms[r.media_id]) for r in asking], now
    )
    refused = {r.media_id: v for r, v in zip(asking, verdicts, strict=True) if v is not None}
    asking = [r for r in asking if r.media_id not in refused]
    if force:
        for request in asking:
            await session.execute(
                update(Job)
                .where(
                    Job.media_id == request.media_id,
                    Job.type.in_(request.types),
                    Job.state != S.SUBMIT_FAILED.value,
                    Job.superseded_at.is_(None),
                )
                .values(superseded_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
    submission_ids: dict[str, int] = {}
    if asking:
        # Core executemany with RETURNING: one cached statement, many rows per round trip.
        table = Submission.__table__
        inserted = await session.execute(
            insert(session, table).returning(table.c.media_id, table.c.id),
            [
                {
                    "media_id": r.media_id,
                    "types": wanted[r.media_id],
                    "config": r.config,
                    "user_data": r.user_data,
                    "state": SubmissionState.SUBMITTING.value,
                    "created_at": now,
                    "updated_at": now,
                }
                for r in asking
            ],
        )
        submission_ids = {row[0]: row[1] for row in inserted}
    rows: dict[tuple[str, str], int] = {}
    if asking:
        jobs = Job.__table__
        inserted = await session.execute(
            insert(session, jobs)
            .on_conflict_do_nothing()
            .returning(jobs.c.media_id, jobs.c.type, jobs.c.id),
            [
                {
                    "submission_id": submission_ids[r.media_id],
                    "media_id": r.media_id,
                    "type": job_type,
                    "region": r.region,
                    "state": S.SUBMITTING.value,
                    "origin": Origin.SUBMITTED.value,
                    "stale": False,
                    "config": r.config,
                    "user_data": r.user_data,
                    "submitted_at": now,
                    "updated_at": now,
                    "duration_s": r.duration_s,
                }
                for r in asking
                for job_type in wanted[r.media_id]
            ],
        )
        rows = {(row[0], row[1]): row[2] for row in inserted}
    lost = [(r, t) for r in asking for t in wanted[r.media_id] if (r.media_id, t) not in rows]
    if lost:
        # Another submitter claimed these between our read and our insert: the index decided.
        blocked |= await blocking_jobs(
            session, sorted({r.media_id for r, _ in lost}), sorted({t for _, t in lost})
        )
        for r, t in lost:  # what was reserved for them goes back
            await release(session, day_of(now), {t: ms[r.media_id]}, now)
    claims = []
    for r in requests:
        mine = {t: rows[(r.media_id, t)] for t in r.types if (r.media_id, t) in rows}
        theirs = {t: blocked[(r.media_id, t)] for t in r.types if (r.media_id, t) in blocked}
        submission_id = submission_ids.get(r.media_id)
        if submission_id is not None and len(mine) < len(wanted[r.media_id]):
            await _fix_submission(session, submission_id, list(mine))
            submission_id = submission_id if mine else None
        reserved = {t: ms[r.media_id] for t in mine}
        claim = Claim(r.media_id, submission_id, mine, theirs, reserved, day_of(now))
        claim.refused = refused.get(r.media_id)
        claims.append(claim)
    return claims


async def _fix_submission(session: AsyncSession, submission_id: int, types: list[str]) -> None:
    """Keep the submission to the types it really claimed; drop it if it claimed none."""
    if types:
        await session.execute(
            update(Submission).where(Submission.id == submission_id).values(types=types)
        )
    else:
        await session.execute(delete(Submission).where(Submission.id == submission_id))


def _all_types(requests: Sequence[SubmitRequest]) -> list[str]:
    return sorted({t for r in requests for t in r.types})


# --- record ------------------------------------------------------------------------------------


async def record_many(
    session: AsyncSession, answers: Sequence[tuple[Claim, Answer]], now: datetime
) -> None:
    """Record VOD's answer for each claim, through `transition`.

    A result stores each returned JobId on the claimed row of its type (`processing`); a type
    VOD returned no job for becomes `submit_unknown`. A refusal moves the rows to its target
    (`submit_failed`, or `submit_unknown` when VOD may have created the jobs). Idempotent: a
    JobId already on its row (a callback got there first) is left as it is.
    """
    results = [(c, a) for c, a in answers if isinstance(a, SubmitResult) and c.rows]
    refusals = [(c, a) for c, a in answers if isinstance(a, Refusal) and c.rows]
    if results:
        await _record_results(session, results, now)
    for claim, refusal in refusals:
        code, request_id = error_fields(refusal.error)
        rows = Job.id.in_(list(claim.rows.values()))
        await transition(
            session, rows, refusal.target, now, code=code, message=refusal.error.message
        )
        if refusal.target is S.SUBMIT_FAILED and claim.day is not None:
            # Nothing was created, so nothing is charged: the minutes go back. An unknown
            # outcome keeps them: VOD may have the job.
            await release(session, claim.day, claim.reserved, now)
        state = (
            SubmissionState.SUBMIT_UNKNOWN
            if refusal.target is S.SUBMIT_UNKNOWN
            else SubmissionState.SUBMIT_FAILED
        )
        await session.execute(
            update(Submission)
            .where(Submission.id == claim.submission_id)
            .values(
                state=state.value,
                updated_at=now,
                code=code,
                message=refusal.error.message,
                request_id=request_id,
            )
        )


async def _record_results(
    session: AsyncSession, results: Sequence[tuple[Claim, SubmitResult]], now: datetime
) -> None:
    ids: dict[int, str] = {}  # jobs.id -> VOD's JobId
    missing: list[int] = []
    for claim, result in results:
        returned = result.job_ids()
        for job_type, row_id in claim.rows.items():
            if job_type in returned:
                ids[row_id] = returned[job_type]
            else:
                missing.append(row_id)
    if missing:
        await transition(
            session,
            Job.id.in_(missing),
            S.SUBMIT_UNKNOWN,
            now,
            code="MissingJobId",
            message="VOD accepted the request without a job of this type",
        )
    if ids:
        known = select(Job.id).where(Job.job_id.in_(list(ids.values())))
        if session.get_bind().dialect.name == "postgresql":
            known = known.with_for_update()
        moved = 0
        if not (await session.execute(known)).first():
            # The usual case, in one statement: no callback has seen these JobIds yet.
            moved = await transition(
                session,
                and_(Job.id.in_(list(ids)), Job.job_id.is_(None)),
                S.PROCESSING,
                now,
                job_id=case(ids, value=Job.id),
            )
        if moved < len(ids):
            for row_id, job_id in ids.items():
                await _store_job_id(session, row_id, job_id, now)
    request_ids = {c.submission_id: r.request_id for c, r in results if c.submission_id}
    await session.execute(
        update(Submission)
        .where(Submission.id.in_(list(request_ids)))
        .values(
            state=SubmissionState.SUBMITTED.value,
            updated_at=now,
            request_id=case(request_ids, value=Submission.id),
        )
    )


async def _store_job_id(session: AsyncSession, row_id: int, job_id: str, now: datetime) -> None:
    """The careful path for one JobId, when a callback may have seen it before we stored it."""
    known = select(Job).where(Job.job_id == job_id)
    if session.get_bind().dialect.name == "postgresql":
        known = known.with_for_update()
    other = await session.scalar(known)
    if other is not None and other.id == row_id:
        return  # stored already, or a callback attached it to our row (tracker.transitions)
    if other is not None:
        # A callback made a row of its own for our JobId before we could store it: keep that
        # row (it holds the outcome) and give it our submission, config and origin.
        mine = await session.get(Job, row_id)
        await session.execute(delete(Job).where(Job.id == row_id))
        if mine is not None:
            await session.execute(
                update(Job)
                .where(Job.id == other.id)
                .values(
                    submission_id=mine.submission_id,
                    origin=Origin.SUBMITTED.value,
                    config=mine.config,
                    user_data=mine.user_data,
                    submitted_at=mine.submitted_at,
                    updated_at=now,
                )
            )
        return
    moved = await transition(
        session, and_(Job.id == row_id, Job.job_id.is_(None)), S.PROCESSING, now, job_id=job_id
    )
    if not moved:
        # The row took another JobId meanwhile (a callback of another job of this media and
        # type); ours must still be tracked, so it becomes a job of its own.
        log.warning("job %s: its row %d already holds another JobId", job_id, row_id)
        mine = await session.get(Job, row_id)
        await session.execute(
            insert(session, Job)
            .values(
                job_id=job_id,
                media_id=mine.media_id if mine else "",
                type=mine.type if mine else "",
                region=mine.region if mine else None,
                state=S.PROCESSING.value,
                origin=Origin.CALLBACK.value,
                stale=False,
                submitted_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )


def error_fields(error: TrackerError) -> tuple[str, str | None]:
    """VOD's Code and RequestId when VOD answered; our own code otherwise."""
    if isinstance(error, VodError):
        return error.vod_code, error.request_id
    details = error.details
    return str(details.get("vod_code") or error.code), details.get("request_id")
