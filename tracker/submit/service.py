"""Flows: submitting media to VOD (claim the jobs, call SubmitAIJob, record what VOD said).

A submission is two units of work around the VOD call, never one transaction across it:
1. claim: the Submission and one `submitting` job per type are committed first, so a crash during
   the call leaves a visible row (and a callback can still attach its JobId to it);
2. record: VOD's JobIds move those jobs to `processing`, or its refusal to `submit_failed`, or an
   unknown outcome to `submit_unknown`, through `tracker.transitions.transition`.
Before the claim, the media's duration is read from VOD (`durations.py`): a media VOD does not
know is refused there, and the claim reserves its minutes in the day's budget (`budget.py`); a
submission over budget claims nothing and is never sent.
Two submitters of the same media and type race on the unique index
`uq_jobs_media_id_type_submitted` (tracker/models/jobs.py, `claims.py`): one of them calls VOD.

`submit_media` takes the database and the VOD client and owns both units of work; the statements
it runs in them are in `claims.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import TrackerError, Unavailable
from tracker.metrics import SUBMITTED_JOBS, VIDEO_MINUTES_SUBMITTED
from tracker.models import Job, JobState
from tracker.submit.budget import UNLIMITED, Budget, minutes
from tracker.submit.claims import (
    Answer,
    Claim,
    Refusal,
    SubmitRequest,
    blocking_jobs,
    claim_many,
    jobs_by_row_id,
    record_many,
)
from tracker.submit.durations import media_info, unmeasured, with_duration
from tracker.vod import (
    SubmitResult,
    VodAnswerUnclear,
    VodClient,
    VodError,
    VodOutcomeUnknown,
    VodRequestInvalid,
    VodThrottled,
    VodUnreachable,
)

log = logging.getLogger(__name__)


S = JobState
RECORD_ATTEMPTS = 5  # writing VOD's answer: a JobId we were given must not be dropped lightly


class ClaimFailed(Unavailable):
    """The database refused the claim: nothing was sent to VOD."""

    code = "database_unavailable"


class TypeOutcome(StrEnum):
    """What happened to one job type of one submission."""

    SUBMITTED = "submitted"
    SKIPPED = "skipped"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass
class Submitted:
    """The result of `submit_media`: the jobs of the request and what happened to each type."""

    request: SubmitRequest
    outcomes: dict[str, TypeOutcome] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)  # one per requested type, new or blocking
    error: TrackerError | None = None  # VOD's refusal or the unknown outcome, if any
    job_ids: dict[str, str] = field(default_factory=dict)  # type -> VOD's JobId, when submitted

    @property
    def sent(self) -> bool:
        return any(o is not TypeOutcome.SKIPPED for o in self.outcomes.values())


# --- the service --------------------------------------------------------------------------------


class Store(Protocol):
    """Where a submission's two units of work are committed (one each, or grouped)."""

    async def claim(self, request: SubmitRequest, *, force: bool, read: bool) -> Claim: ...
    async def record(self, claim: Claim, answer: Answer) -> None: ...


class DirectStore:
    """One transaction per unit of work (the API; `tracker.submit.batch` groups them instead)."""

    def __init__(self, database: Database, clock: Clock, budget: Budget = UNLIMITED) -> None:
        self.database = database
        self.clock = clock
        self.budget = budget

    async def claim(self, request: SubmitRequest, *, force: bool, read: bool) -> Claim:
        async with self.database.write() as session:
            (claim,) = await claim_many(
                session, [request], self.clock(), force=force, read=read, budget=self.budget
            )
        return claim

    async def record(self, claim: Claim, answer: Answer) -> None:
        async with self.database.write() as session:
            await record_many(session, [(claim, answer)], self.clock())


async def submit_media(
    database: Database,
    vod: VodClient,
    request: SubmitRequest,
    clock: Clock,
    *,
    force: bool = False,
    store: Store | None = None,
    check_existing: bool = True,
    load_jobs: bool = True,
    throttle_rounds: int = 0,
    throttle_pause: float = 1.0,
    budget: Budget = UNLIMITED,
    look_up: bool = True,
) -> Submitted:
    """Submit one media: read its duration, claim within the budget, call SubmitAIJob once,
    record VOD's answer.

    Never resubmits by itself: a claimed job ends `processing`, `submit_failed` or
    `submit_unknown`; only a throttling refusal (VOD created nothing) is sent again, at most
    `throttle_rounds` more times. Commits its own units of work; none is open during a call.
    `check_existing=False` skips the read for jobs of origin `callback` (a caller that looked
    already); the unique index still decides between submitters. The jobs take the region of
    `vod`, the client of the request's region. `look_up=False` trusts `request.duration_s`
    (a caller that asked VOD already, many media a call). Raises MediaNotFound,
    DurationUnknown or BudgetExceeded before anything is claimed or sent, and VOD's own error
    when GetVideoInfo fails.
    """
    if request.region is None:
        request = replace(request, region=vod.region)
    elif request.region != vod.region:
        raise ValueError(f"a request for {request.region} given the client of {vod.region}")
    if look_up and request.duration_s is None:
        if check_existing and not force:
            # Nothing new to submit (a repeated request): answered without asking VOD.
            async with database.session() as session:
                found = await blocking_jobs(session, [request.media_id], request.types)
            if len(found) == len(request.types):
                jobs = sorted(found.values(), key=lambda job: (job.type, job.id))
                return Submitted(request, dict.fromkeys(request.types, TypeOutcome.SKIPPED), jobs)
        try:
            info = await media_info(vod, request.media_id)
        except (VodError, VodUnreachable) as exc:
            request = unmeasured(request, budget, exc)
        else:
            request = with_duration(request, info, budget)
    store = store or DirectStore(database, clock, budget)
    claiming = asyncio.ensure_future(store.claim(request, force=force, read=check_existing))
    try:
        claim = await asyncio.shield(claiming)
    except (SQLAlchemyError, OSError) as exc:
        raise ClaimFailed(f"could not record the submission, nothing sent: {exc}") from exc
    except asyncio.CancelledError:
        # Interrupted before the call: release what was claimed, nothing was sent.
        claim = await claiming
        if claim.rows:
            unsent = VodUnreachable("interrupted before the request was sent; nothing submitted")
            await _record(store, claim, Refusal(unsent, S.SUBMIT_FAILED))
        raise
    if claim.refused is not None:
        raise claim.refused
    submitted = Submitted(request)
    submitted.outcomes = {t: TypeOutcome.SKIPPED for t in claim.blocked}
    if claim.rows:
        await _call_and_record(
            store, vod, request, claim, submitted, throttle_rounds, throttle_pause
        )
    for job_type, outcome in submitted.outcomes.items():
        SUBMITTED_JOBS.labels(job_type, outcome.value).inc()
        if outcome in (TypeOutcome.SUBMITTED, TypeOutcome.UNKNOWN) and job_type in claim.rows:
            # What VOD may charge for: accepted, or perhaps accepted (the minutes are kept).
            minutes_sent = minutes(claim.reserved.get(job_type, 0))
            VIDEO_MINUTES_SUBMITTED.labels(job_type, vod.region).inc(minutes_sent)
    submitted.jobs = list(claim.blocked.values())
    if load_jobs and claim.rows:
        async with database.session() as session:
            submitted.jobs += await jobs_by_row_id(session, list(claim.rows.values()))
    submitted.jobs.sort(key=lambda job: (job.type, job.id))
    return submitted


async def _call_and_record(
    store: Store,
    vod: VodClient,
    request: SubmitRequest,
    claim: Claim,
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
        await _record(store, claim, Refusal(exc, S.SUBMIT_UNKNOWN))
        _settle(submitted, types, TypeOutcome.UNKNOWN, exc)
    except (VodError, VodUnreachable, VodRequestInvalid) as exc:  # nothing was created
        await _record(store, claim, Refusal(exc, S.SUBMIT_FAILED))
        _settle(submitted, types, TypeOutcome.FAILED, exc)
    except asyncio.CancelledError:
        # Interrupted mid-call (second Ctrl-C): VOD may have the request; never assume it didn't.
        unknown = VodOutcomeUnknown("interrupted while waiting for VOD; the job may exist")
        await asyncio.shield(_record(store, claim, Refusal(unknown, S.SUBMIT_UNKNOWN)))
        raise
    except Exception as exc:
        log.exception("SubmitAIJob of %s failed unexpectedly", request.media_id)
        unknown = VodOutcomeUnknown(f"unexpected error around the VOD call: {exc!r}")
        await _record(store, claim, Refusal(unknown, S.SUBMIT_UNKNOWN))
        _settle(submitted, types, TypeOutcome.UNKNOWN, unknown)
    else:
        try:
            # Shielded: a JobId VOD gave us is recorded even if we are interrupted now.
            await asyncio.shield(_record(store, claim, result))
        except BaseException:
            # The jobs exist at VOD: leave their ids where an operator (and grep) finds them.
            log.error(
                "SubmitAIJob %s created %s; if not recorded, callbacks will attach them",
                result.request_id,
                ", ".join(f"{j.type}={j.job_id}" for j in result.jobs),
            )
            raise
        returned = result.job_ids()
        submitted.job_ids = {t: returned[t] for t in types if t in returned}
        _settle(submitted, list(submitted.job_ids), TypeOutcome.SUBMITTED, None)
        missing = [t for t in types if t not in returned]
        if missing:
            # A success without a JobId for a type: VOD may have created it (claims.py records
            # it submit_unknown); it is neither submitted nor failed, and must not say so.
            unclear = _unclear_answer(request.media_id, result, missing, submitted.job_ids)
            _settle(submitted, missing, TypeOutcome.UNKNOWN, unclear)


def _unclear_answer(
    media_id: str, result: SubmitResult, missing: list[str], matched: dict[str, str]
) -> VodAnswerUnclear:
    message = (
        f"VOD answered SubmitAIJob (RequestId {result.request_id or 'none'}) without a JobId for "
        f"{', '.join(missing)}; the job may exist, so it is not submitted again"
    )
    stray = [j.job_id for j in result.jobs if j.job_id and j.job_id not in matched.values()]
    if stray:  # a callback or reconciliation may still attach them; an operator can look
        message += f" (JobIds VOD named without a requested type: {', '.join(stray)})"
    log.error("media %s: %s", media_id, message)
    return VodAnswerUnclear(message, vod_code="MissingJobId", request_id=result.request_id or None)


def _settle(
    submitted: Submitted, types: Sequence[str], outcome: TypeOutcome, error: TrackerError | None
) -> None:
    submitted.outcomes.update(dict.fromkeys(types, outcome))
    submitted.error = error


async def _record(store: Store, claim: Claim, answer: Answer) -> None:
    """Bounded retries: a lost race with a callback on PostgreSQL (IntegrityError) or a
    database blip must not drop what VOD told us."""
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            await store.record(claim, answer)
            return
        except (IntegrityError, DBAPIError, OSError) as exc:
            if attempt == RECORD_ATTEMPTS:
                raise
            log.warning("recording submission %s: %s; retrying", claim.submission_id, exc)
            await asyncio.sleep(0.05 * 2**attempt)
