"""Submitting media to VOD: validate, claim the jobs, call SubmitAIJob, record what VOD said.

A submission is two units of work around the VOD call, never one transaction across it:
1. claim: the Submission and one `submitting` job per type are committed first, so a crash during
   the call leaves a visible row (and a callback can still attach its JobId to it);
2. record: VOD's JobIds move those jobs to `processing`, or its refusal to `submit_failed`, or an
   unknown outcome to `submit_unknown`, through `tracker.transitions.transition`.
Two submitters of the same media and type race on the unique index
`uq_jobs_media_id_type_submitted` (see tracker/models.py), so only one of them calls VOD.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any

from sqlalchemy import Select, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.api import job_json
from tracker.auth import require_api_token
from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import BadRequest, TrackerError, Unavailable
from tracker.metrics import SUBMITTED_JOBS
from tracker.models import Job, JobState, Origin, Submission, SubmissionState
from tracker.transitions import transition
from tracker.vod import (
    JOB_TYPES,
    SubmitResult,
    VodClient,
    VodError,
    VodOutcomeUnknown,
    VodThrottled,
    VodUnreachable,
)

log = logging.getLogger(__name__)

S = JobState
# Where each AI type is offered (vod-reference.md 1.1); each job costs money, so a type the
# configured region lacks is refused here instead of by a bill or an error later.
REGIONS: dict[str, frozenset[str]] = {
    "AIVideoTag": frozenset({"cn-beijing", "cn-shanghai"}),
    "AIMediaDNA": frozenset({"cn-beijing", "cn-shanghai", "ap-southeast-1"}),
}
EXTEND_LIMIT = 512  # bytes of UserData.Extend (vod-reference.md 6.3, 6.6)
MEDIA_ID_LIMIT = 128  # the width of jobs.media_id
RECORD_ATTEMPTS = 5  # writing VOD's answer: a JobId we were given must not be dropped lightly


class InvalidSubmission(BadRequest):
    code = "invalid_submission"


class TypeNotInRegion(BadRequest):
    code = "type_not_in_region"


class VodNotConfigured(Unavailable):
    code = "vod_not_configured"


@dataclass(frozen=True)
class SubmitRequest:
    """One media and the AI types to run on it, already validated."""

    media_id: str
    types: tuple[str, ...]
    config: dict[str, Any] | None = None
    user_data: dict[str, Any] | None = None


class Outcome(StrEnum):
    """What happened to one job type of one submission."""

    SUBMITTED = "submitted"
    SKIPPED = "skipped"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass
class Submitted:
    """The result of `submit_media`: the jobs of the request and what happened to each type."""

    request: SubmitRequest
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)  # one per requested type, new or blocking
    error: TrackerError | None = None  # VOD's refusal or the unknown outcome, if any

    @property
    def sent(self) -> bool:
        return any(o is not Outcome.SKIPPED for o in self.outcomes.values())


# --- validation ---------------------------------------------------------------------------------


def parse_types(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """`AIVideoTag,AIMediaDNA` or a list of them; unknown names are a 400 listing the valid ones."""
    if value is None:
        raise InvalidSubmission("types: required", valid_types=list(JOB_TYPES))
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidSubmission("types: must be strings", valid_types=list(JOB_TYPES))
    types = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not types:
        raise InvalidSubmission("types: at least one is required", valid_types=list(JOB_TYPES))
    unknown = [t for t in types if t not in JOB_TYPES]
    if unknown:
        raise InvalidSubmission(
            f"types: unknown {', '.join(unknown)}; valid types are {', '.join(JOB_TYPES)}",
            valid_types=list(JOB_TYPES),
        )
    return types


def parse_json_object(name: str, value: object) -> dict[str, Any] | None:
    """A JSON object given as text (CLI) or already parsed (API body); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidSubmission(f"{name}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidSubmission(f"{name}: must be a JSON object")
    return value


def check_media_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidSubmission("media_id: required")
    media_id = value.strip()
    if len(media_id) > MEDIA_ID_LIMIT or any(c.isspace() or not c.isprintable() for c in media_id):
        raise InvalidSubmission(
            f"media_id: at most {MEDIA_ID_LIMIT} printable characters without spaces"
        )
    return media_id


def check_user_data(user_data: dict[str, Any] | None) -> None:
    """Extend within VOD's 512 bytes; a per-request MessageCallback with an http(s) URL."""
    if not user_data:
        return
    extend = user_data.get("Extend")
    if extend is not None:
        text = extend if isinstance(extend, str) else _compact(extend)
        size = len(text.encode())
        if size > EXTEND_LIMIT:
            raise InvalidSubmission(
                f"user_data.Extend: {size} bytes, VOD allows at most {EXTEND_LIMIT}"
            )
    callback = user_data.get("MessageCallback")
    if callback is not None:
        # VOD accepts the callback as an object or as JSON text (vod-reference.md 6.6).
        parsed = parse_json_object("user_data.MessageCallback", callback)
        url = (parsed or {}).get("CallbackURL")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidSubmission("user_data.MessageCallback.CallbackURL: an http(s) URL")


def check_region(types: Sequence[str], region: str) -> None:
    missing = [t for t in types if region not in REGIONS[t]]
    if missing:
        offered = "; ".join(f"{t}: {', '.join(sorted(REGIONS[t]))}" for t in missing)
        raise TypeNotInRegion(
            f"region {region} does not offer {', '.join(missing)} ({offered}); nothing submitted",
            region=region,
        )


def validate_request(
    media_id: object,
    types: str | Iterable[str] | None,
    config: object = None,
    user_data: object = None,
    *,
    region: str,
) -> SubmitRequest:
    """Everything VOD would refuse, or bill us for by surprise, is refused here first."""
    request = SubmitRequest(
        media_id=check_media_id(media_id),
        types=parse_types(types),
        config=parse_json_object("config", config),
        user_data=parse_json_object("user_data", user_data),
    )
    check_user_data(request.user_data)
    check_region(request.types, region)
    return request


# --- claim (unit of work 1) ---------------------------------------------------------------------


def blocking_jobs(media_ids: Sequence[str], types: Sequence[str]) -> Select[Job]:
    """Jobs that make a new submission of (media, type) a duplicate: live or done, not replaced.

    Origin `callback` counts too (VOD runs DNA on its own after upload); only the submitted ones
    are also held by the unique index, which is what decides a race.
    """
    return select(Job).where(
        Job.media_id.in_(media_ids),
        Job.type.in_(types),
        Job.state != S.SUBMIT_FAILED.value,
        Job.superseded_at.is_(None),
    )


@dataclass
class Claim:
    submission_id: int | None
    rows: dict[str, int]  # type -> jobs.id of the `submitting` rows we own
    blocked: dict[str, Job]  # type -> the job that made it a duplicate


async def claim_jobs(
    session: AsyncSession, request: SubmitRequest, now: datetime, *, force: bool = False
) -> Claim:
    """Record the submission and one `submitting` job per type that is not live or done.

    Idempotent on (media, type): the INSERT skips any type the unique index already holds, so
    of two concurrent claims only one owns each row. `force` first retires the current jobs.
    """
    if force:
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
    blocked = {} if force else await _blocking(session, request)
    wanted = [t for t in request.types if t not in blocked]
    if not wanted:
        return Claim(None, {}, blocked)
    submission_id = await session.scalar(
        _insert(session, Submission)
        .values(
            media_id=request.media_id,
            types=wanted,
            config=request.config,
            user_data=request.user_data,
            state=SubmissionState.SUBMITTING.value,
            created_at=now,
            updated_at=now,
        )
        .returning(Submission.id)
    )
    assert submission_id is not None
    inserted = await session.execute(
        _insert(session, Job)
        .values(
            [
                {
                    "submission_id": submission_id,
                    "media_id": request.media_id,
                    "type": job_type,
                    "state": S.SUBMITTING.value,
                    "origin": Origin.SUBMITTED.value,
                    "stale": False,
                    "config": request.config,
                    "user_data": request.user_data,
                    "submitted_at": now,
                    "updated_at": now,
                }
                for job_type in wanted
            ]
        )
        .on_conflict_do_nothing()
        .returning(Job.type, Job.id)
    )
    rows = {job_type: job_id for job_type, job_id in inserted.tuples()}
    if len(rows) < len(wanted):
        # Another submitter claimed some type between our read and our insert: the index decided.
        blocked |= await _blocking(session, request, [t for t in wanted if t not in rows])
        if not rows:
            await session.execute(delete(Submission).where(Submission.id == submission_id))
            return Claim(None, {}, blocked)
        await session.execute(
            update(Submission).where(Submission.id == submission_id).values(types=list(rows))
        )
    return Claim(submission_id, rows, blocked)


async def _blocking(
    session: AsyncSession, request: SubmitRequest, types: Sequence[str] | None = None
) -> dict[str, Job]:
    jobs = await session.scalars(blocking_jobs([request.media_id], types or request.types))
    found: dict[str, Job] = {}
    for job in jobs:
        found.setdefault(job.type, job)
    return found


def _insert(session: AsyncSession, table: type[Job] | type[Submission]) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# --- record (unit of work 2) --------------------------------------------------------------------


async def record_result(
    session: AsyncSession, *, claim: Claim, result: SubmitResult, now: datetime
) -> None:
    """Store each returned JobId on the claimed row of its type and move it to `processing`."""
    by_type = {job.type: job for job in result.jobs if job.job_id}
    for job_type, row_id in claim.rows.items():
        ai_job = by_type.get(job_type)
        if ai_job is None:
            await transition(
                session,
                Job.id == row_id,
                S.SUBMIT_UNKNOWN,
                now,
                code="MissingJobId",
                message=f"VOD accepted the request ({result.request_id}) without a {job_type} job",
            )
            continue
        await _store_job_id(session, row_id, ai_job.job_id, now)
    await _finish_submission(
        session, claim, SubmissionState.SUBMITTED, now, request_id=result.request_id
    )


async def _store_job_id(session: AsyncSession, row_id: int, job_id: str, now: datetime) -> None:
    known = select(Job).where(Job.job_id == job_id)
    if session.get_bind().dialect.name == "postgresql":
        known = known.with_for_update()
    other = await session.scalar(known)
    if other is not None and other.id == row_id:
        return  # a callback for this job already attached it to our row (transitions.py)
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
            _insert(session, Job)
            .values(
                job_id=job_id,
                media_id=mine.media_id if mine else "",
                type=mine.type if mine else "",
                state=S.PROCESSING.value,
                origin=Origin.CALLBACK.value,
                stale=False,
                submitted_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )


async def record_refusal(
    session: AsyncSession, *, claim: Claim, error: TrackerError, target: JobState, now: datetime
) -> None:
    """Mark the claimed rows `submit_failed` (VOD refused, or was never reached) or
    `submit_unknown` (the request may have created jobs: never resubmitted by us)."""
    code, request_id = error_fields(error)
    for row_id in claim.rows.values():
        await transition(session, Job.id == row_id, target, now, code=code, message=error.message)
    state = (
        SubmissionState.SUBMIT_UNKNOWN
        if target is S.SUBMIT_UNKNOWN
        else SubmissionState.SUBMIT_FAILED
    )
    await _finish_submission(
        session, claim, state, now, code=code, message=error.message, request_id=request_id
    )


async def _finish_submission(
    session: AsyncSession, claim: Claim, state: SubmissionState, now: datetime, **values: Any
) -> None:
    await session.execute(
        update(Submission)
        .where(Submission.id == claim.submission_id)
        .values(state=state.value, updated_at=now, **values)
    )


def error_fields(error: TrackerError) -> tuple[str, str | None]:
    """VOD's Code and RequestId when VOD answered; our own code otherwise."""
    if isinstance(error, VodError):
        return error.vod_code, error.request_id
    details = error.details
    return str(details.get("vod_code") or error.code), details.get("request_id")


# --- the service --------------------------------------------------------------------------------


async def submit_media(
    database: Database,
    vod: VodClient,
    request: SubmitRequest,
    clock: Clock,
    *,
    force: bool = False,
    throttle_rounds: int = 0,
    throttle_pause: float = 1.0,
) -> Submitted:
    """Submit one media: claim, call SubmitAIJob once, record VOD's answer.

    Never resubmits by itself: a claimed job ends `processing`, `submit_failed` or
    `submit_unknown`; only a throttling refusal (VOD created nothing) is sent again, at most
    `throttle_rounds` more times. Commits its own units of work; none is open during the call.
    """
    async with database.write() as session:
        claim = await claim_jobs(session, request, clock(), force=force)
    submitted = Submitted(request)
    submitted.outcomes = {t: Outcome.SKIPPED for t in claim.blocked}
    if claim.rows:
        await _call_and_record(
            database, vod, request, claim, clock, submitted, throttle_rounds, throttle_pause
        )
    for job_type, outcome in submitted.outcomes.items():
        SUBMITTED_JOBS.labels(job_type, outcome.value).inc()
    submitted.jobs = await _jobs_of(database, claim)
    return submitted


async def _call_and_record(
    database: Database,
    vod: VodClient,
    request: SubmitRequest,
    claim: Claim,
    clock: Clock,
    submitted: Submitted,
    throttle_rounds: int,
    throttle_pause: float,
) -> None:
    types = list(claim.rows)
    try:
        for round_ in range(throttle_rounds + 1):
            try:
                result = await vod.submit_ai_job(
                    request.media_id, types, request.config, request.user_data
                )
                break
            except VodThrottled:
                if round_ >= throttle_rounds:
                    raise
                await asyncio.sleep(min(30.0, throttle_pause * 2**round_))
    except VodOutcomeUnknown as exc:
        await _record(database, clock, claim, _refusal(claim, exc, S.SUBMIT_UNKNOWN))
        _settle(submitted, types, Outcome.UNKNOWN, exc)
    except (VodError, VodUnreachable) as exc:
        await _record(database, clock, claim, _refusal(claim, exc, S.SUBMIT_FAILED))
        _settle(submitted, types, Outcome.FAILED, exc)
    except asyncio.CancelledError:
        # Interrupted mid-call (second Ctrl-C): VOD may have the request; never assume it didn't.
        unknown = VodOutcomeUnknown("interrupted while waiting for VOD; the job may exist")
        await asyncio.shield(
            _record(database, clock, claim, _refusal(claim, unknown, S.SUBMIT_UNKNOWN))
        )
        raise
    except Exception as exc:
        log.exception("SubmitAIJob of %s failed unexpectedly", request.media_id)
        unknown = VodOutcomeUnknown(f"unexpected error around the VOD call: {exc!r}")
        await _record(database, clock, claim, _refusal(claim, unknown, S.SUBMIT_UNKNOWN))
        _settle(submitted, types, Outcome.UNKNOWN, unknown)
    else:
        try:
            write = partial(record_result, claim=claim, result=result)
            await _record(database, clock, claim, write)
        except BaseException:
            # The jobs exist at VOD: leave their ids where an operator (and grep) finds them.
            log.error(
                "SubmitAIJob %s created %s but recording failed; the callbacks will attach them",
                result.request_id,
                ", ".join(f"{j.type}={j.job_id}" for j in result.jobs),
            )
            raise
        _settle(submitted, types, Outcome.SUBMITTED, None)


def _refusal(claim: Claim, error: TrackerError, target: JobState) -> Write:
    return partial(record_refusal, claim=claim, error=error, target=target)


def _settle(
    submitted: Submitted, types: Sequence[str], outcome: Outcome, error: TrackerError | None
) -> None:
    submitted.outcomes.update(dict.fromkeys(types, outcome))
    submitted.error = error


Write = Callable[..., Awaitable[None]]  # (session, now=...) -> None


async def _record(database: Database, clock: Clock, claim: Claim, write: Write) -> None:
    """One unit of work with bounded retries: a lost race with a callback on PostgreSQL
    (IntegrityError) or a database blip must not drop what VOD told us."""
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            async with database.write() as session:
                await write(session, now=clock())
            return
        except (IntegrityError, DBAPIError, OSError) as exc:
            if attempt == RECORD_ATTEMPTS:
                raise
            log.warning("recording submission %s: %s; retrying", claim.submission_id, exc)
            await asyncio.sleep(0.05 * 2**attempt)


async def _jobs_of(database: Database, claim: Claim) -> list[Job]:
    ids = list(claim.rows.values())
    jobs = list(claim.blocked.values())
    if ids:
        async with database.session() as session:
            jobs += list(await session.scalars(select(Job).where(Job.id.in_(ids))))
    return sorted(jobs, key=lambda job: (job.type, job.id))


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- POST /jobs ---------------------------------------------------------------------------------


async def post_jobs(request: Request) -> JSONResponse:
    """201 with the new jobs; 200 when every type was already live or done; VOD's refusal as
    502 (429 when throttled), an unknown outcome as 504, each with VOD's Code and RequestId."""
    require_api_token(request)
    body = await _json_body(request)
    settings = request.app.state.settings
    submit = validate_request(
        body.get("media_id"),
        body.get("types"),
        body.get("config"),
        body.get("user_data"),
        region=settings.vod_region,
    )
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidSubmission("force: must be true or false")
    vod: VodClient | None = getattr(request.app.state, "vod", None)
    if vod is None:
        raise VodNotConfigured(
            "VOD credentials are not configured (ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET)"
        )
    done = await submit_media(
        request.app.state.database, vod, submit, request.app.state.clock, force=force
    )
    jobs = [job_json(job) for job in done.jobs]
    if done.error is None:
        return JSONResponse({"jobs": jobs}, status_code=201 if done.sent else 200)
    code, request_id = error_fields(done.error)
    status = 504 if isinstance(done.error, VodOutcomeUnknown) else 502
    if isinstance(done.error, VodThrottled):
        status = 429
    return JSONResponse(
        {
            "error": done.error.code,
            "message": done.error.message,
            "Code": code,
            "Message": done.error.message,
            "RequestId": request_id,
            "jobs": jobs,
        },
        status_code=status,
    )


async def _json_body(request: Request) -> Mapping[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


routes = [Route("/jobs", post_jobs, methods=["POST"])]
