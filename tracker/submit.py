"""Submitting media to VOD: validate, claim the jobs, call SubmitAIJob, record what VOD said.

A submission is two units of work around the VOD call, never one transaction across it:
1. claim: the Submission and one `submitting` job per type are committed first, so a crash during
   the call leaves a visible row (and a callback can still attach its JobId to it);
2. record: VOD's JobIds move those jobs to `processing`, or its refusal to `submit_failed`, or an
   unknown outcome to `submit_unknown`, through `tracker.transitions.transition`.
Two submitters of the same media and type race on the unique index
`uq_jobs_media_id_type_submitted` (tracker/models.py, tracker/claims.py): one of them calls VOD.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.api import job_json, list_jobs
from tracker.auth import require_api_token
from tracker.claims import (
    Answer,
    Claim,
    Refusal,
    SubmitRequest,
    claim_many,
    error_fields,
    record_many,
)
from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import BadRequest, TrackerError, Unavailable
from tracker.metrics import SUBMITTED_JOBS
from tracker.models import Job, JobState
from tracker.vod import (
    JOB_TYPES,
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
# VOD's media ids are 32 hex digits; this leaves room for other ids without letting in spaces,
# commas (a CSV line) or control characters. The OpenAPI document states the same pattern.
MEDIA_ID = re.compile(rf"[A-Za-z0-9_.:@=+/-]{{1,{MEDIA_ID_LIMIT}}}")
RECORD_ATTEMPTS = 5  # writing VOD's answer: a JobId we were given must not be dropped lightly


class InvalidSubmission(BadRequest):
    code = "invalid_submission"


class TypeNotInRegion(BadRequest):
    code = "type_not_in_region"


class VodNotConfigured(Unavailable):
    code = "vod_not_configured"


class ClaimFailed(Unavailable):
    """The database refused the claim: nothing was sent to VOD."""

    code = "database_unavailable"


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
    job_ids: dict[str, str] = field(default_factory=dict)  # type -> VOD's JobId, when submitted

    @property
    def sent(self) -> bool:
        return any(o is not Outcome.SKIPPED for o in self.outcomes.values())


# --- validation ---------------------------------------------------------------------------------


def parse_types(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """`AIVideoTag,AIMediaDNA` or a list of them; unknown names are a 400 listing the valid ones."""
    if value is None:
        raise InvalidSubmission("types: required", valid_types=list(JOB_TYPES))
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidSubmission(
            "types: a list or a comma-separated string", valid_types=list(JOB_TYPES)
        )
    if not all(isinstance(item, str) for item in items):
        raise InvalidSubmission("types: must be strings", valid_types=list(JOB_TYPES))
    types = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
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
    if not MEDIA_ID.fullmatch(media_id):
        raise InvalidSubmission(
            f"media_id: 1 to {MEDIA_ID_LIMIT} of the characters A-Z a-z 0-9 _ . : @ = + / -"
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


# --- the service --------------------------------------------------------------------------------


class Store(Protocol):
    """Where a submission's two units of work are committed (one each, or grouped)."""

    async def claim(self, request: SubmitRequest, *, force: bool, read: bool) -> Claim: ...
    async def record(self, claim: Claim, answer: Answer) -> None: ...


class DirectStore:
    """One transaction per unit of work (the API; `tracker.batch` groups them instead)."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    async def claim(self, request: SubmitRequest, *, force: bool, read: bool) -> Claim:
        async with self.database.write() as session:
            (claim,) = await claim_many(session, [request], self.clock(), force=force, read=read)
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
) -> Submitted:
    """Submit one media: claim, call SubmitAIJob once, record VOD's answer.

    Never resubmits by itself: a claimed job ends `processing`, `submit_failed` or
    `submit_unknown`; only a throttling refusal (VOD created nothing) is sent again, at most
    `throttle_rounds` more times. Commits its own units of work; none is open during the call.
    `check_existing=False` skips the read for jobs of origin `callback` (a caller that looked
    already); the unique index still decides between submitters.
    """
    store = store or DirectStore(database, clock)
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
    submitted = Submitted(request)
    submitted.outcomes = {t: Outcome.SKIPPED for t in claim.blocked}
    if claim.rows:
        await _call_and_record(
            store, vod, request, claim, submitted, throttle_rounds, throttle_pause
        )
    for job_type, outcome in submitted.outcomes.items():
        SUBMITTED_JOBS.labels(job_type, outcome.value).inc()
    submitted.jobs = list(claim.blocked.values())
    if load_jobs and claim.rows:
        async with database.session() as session:
            ids = list(claim.rows.values())
            submitted.jobs += list(await session.scalars(select(Job).where(Job.id.in_(ids))))
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
        _settle(submitted, types, Outcome.UNKNOWN, exc)
    except (VodError, VodUnreachable) as exc:
        await _record(store, claim, Refusal(exc, S.SUBMIT_FAILED))
        _settle(submitted, types, Outcome.FAILED, exc)
    except asyncio.CancelledError:
        # Interrupted mid-call (second Ctrl-C): VOD may have the request; never assume it didn't.
        unknown = VodOutcomeUnknown("interrupted while waiting for VOD; the job may exist")
        await asyncio.shield(_record(store, claim, Refusal(unknown, S.SUBMIT_UNKNOWN)))
        raise
    except Exception as exc:
        log.exception("SubmitAIJob of %s failed unexpectedly", request.media_id)
        unknown = VodOutcomeUnknown(f"unexpected error around the VOD call: {exc!r}")
        await _record(store, claim, Refusal(unknown, S.SUBMIT_UNKNOWN))
        _settle(submitted, types, Outcome.UNKNOWN, unknown)
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
        _settle(submitted, types, Outcome.SUBMITTED, None)
        submitted.job_ids = {j.type: j.job_id for j in result.jobs if j.type in claim.rows}


def _settle(
    submitted: Submitted, types: Sequence[str], outcome: Outcome, error: TrackerError | None
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


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- POST /jobs ---------------------------------------------------------------------------------


async def post_jobs(request: Request) -> JSONResponse:
    """201 with the new jobs; 200 when every type was already live or done; VOD's refusal as
    502 (429 when throttled), an unknown outcome as 504, each with VOD's Code and RequestId."""
    require_api_token(request)
    body = await _json_body(request)
    for name in ("config", "user_data"):
        if not isinstance(body.get(name), dict | None):  # JSON text is for the command line
            raise InvalidSubmission(f"{name}: must be a JSON object")
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


async def jobs(request: Request) -> JSONResponse:
    """/jobs: POST submits (here), GET lists (tracker/api.py). One route, so a 405 and OPTIONS
    name both methods; it must come before tracker.api's routes."""
    if request.method == "POST":
        return await post_jobs(request)
    return await list_jobs(request)


routes = [Route("/jobs", jobs, methods=["GET", "POST"])]
