"""HTTP: the status API (where is my job?) and `POST /jobs`. Thin routes: parse, call
`tracker.api.queries` or the submit wing, shape the answer (tracker/api/schemas/)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.api import queries, schemas
from tracker.api.auth import presented_token, require_api_token
from tracker.api.bodies import read_json_object
from tracker.api.budget import budget_today, dry_run_json
from tracker.api.queries import JobFilter, Stats
from tracker.clock import iso
from tracker.context import context_of
from tracker.db import Database
from tracker.errors import BadRequest, JobNotFound, TrackerError, Unavailable
from tracker.ingest.queue import MnsConsumer
from tracker.models import FINAL, CallbackEvent, Heartbeat, JobState
from tracker.notify.stream import (
    caller_key,
    job_seq,
    parse_wait,
    wait_for_job_change,
    waiters_of,
)
from tracker.shapes import job_json
from tracker.submit.budget import Budget
from tracker.submit.claims import error_fields
from tracker.submit.estimate import estimate_media
from tracker.submit.service import submit_media
from tracker.submit.validate import InvalidSubmission, validate_request
from tracker.vod import SOURCES_HINT, VodError, VodUnreachable


def event_json(event: CallbackEvent) -> schemas.Event:
    return {
        "id": event.id,
        "event_type": event.event_type,
        "job_id": event.job_id,
        "media_id": event.media_id,
        "status": event.status,
        "event_time": iso(event.event_time),
        "received_at": iso(event.received_at),
        "deliveries": event.deliveries,
        "applied": event.applied,
        "applied_at": iso(event.applied_at),
        "reason": event.reason,
        "body": event.body,
    }


def heartbeat_json(beat: Heartbeat) -> schemas.Heartbeat:
    return {
        "name": beat.name,
        "owner": beat.owner,
        "started_at": iso(beat.started_at),
        "finished_at": iso(beat.finished_at),
        "duration_s": beat.duration_s,
        "ok": beat.ok,
        "summary": beat.summary,
    }


def stats_json(stats: Stats, now: datetime) -> schemas.Stats:
    return {
        "computed_at": iso(stats.computed_at),
        "jobs": {
            "by_type": stats.jobs,
            "by_state": stats.by_state(),
            "total": sum(stats.by_state().values()),
            "stale": stats.stale,
            "oldest_unfinished_submitted_at": iso(stats.oldest_unfinished_at),
            "oldest_unfinished_age_s": stats.oldest_unfinished_seconds(now),
        },
        "callbacks_last_hour": {
            "received": stats.callbacks_received,
            "duplicate": stats.callbacks_duplicate,
            "rejected": stats.callbacks_rejected,
        },
        "subscriptions": {
            "enabled": stats.subscriptions.enabled,
            "disabled": stats.subscriptions.disabled,
            "deliveries_pending": stats.subscriptions.deliveries_pending,
            "deliveries_failed": stats.subscriptions.deliveries_failed,
        },
        "heartbeats": [heartbeat_json(beat) for beat in stats.heartbeats],
        "budget": {},  # filled by get_stats, fresh
    }


def consumer_json(consumer: MnsConsumer) -> schemas.MnsConsumer:
    """The MNS consumer's state, queue, last error and counts (/stats; /readyz with a token)."""
    last = consumer.last_message_at
    return {
        "state": consumer.state,
        "since": iso(datetime.fromtimestamp(consumer.since, UTC)),
        "queue": consumer.queue,
        "endpoint": consumer.client.endpoint,
        "last_error": consumer.last_error,
        "last_message_at": None if last is None else iso(datetime.fromtimestamp(last, UTC)),
        "messages": dict(consumer.counts),
    }


# --- parameters -------------------------------------------------------------------------------

KNOWN_PARAMS = {
    "region",
    "state",
    "type",
    "media_id",
    "stale",
    "submitted_after",
    "submitted_before",
    "limit",
    "cursor",
}
STATES = {state.value for state in JobState}


def _bad(parameter: str, message: str) -> BadRequest:
    return BadRequest(f"{parameter}: {message}", parameter=parameter)


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise _bad(name, "given more than once")
    return values[0] if values else None


def _csv(request: Request, name: str) -> tuple[str, ...]:
    return queries.split_csv(request.query_params.getlist(name))


# RFC 3339, as `format: date-time` in the OpenAPI document says; Python alone is more lenient.
RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_time(raw: str, name: str) -> datetime:
    match = RFC3339.fullmatch(raw)
    if match is None:
        raise _bad(name, "not an RFC 3339 date-time, e.g. 2026-01-02T03:04:05Z")
    day, minutes, seconds, fraction, offset = match.groups()
    seconds = min(seconds, "59")  # a leap second counts as the second before it
    fraction = (fraction or "")[:7]
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{day}T{minutes}:{seconds}{fraction}{offset}")
    except ValueError:
        raise _bad(name, "not a valid date-time") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # valid, but just outside what Python holds in UTC (year 1 or 9999)
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=UTC)


def _time(request: Request, name: str) -> datetime | None:
    raw = _single(request, name)
    return None if raw is None else parse_time(raw, name)


def parse_filter(request: Request) -> JobFilter:
    unknown = sorted(set(request.query_params) - KNOWN_PARAMS)
    if unknown:
        raise _bad(unknown[0], "unknown parameter")
    states: list[str] = []
    for raw in request.query_params.getlist("state"):
        for state in raw.split(","):
            if state not in STATES:
                raise _bad("state", f"{state!r} is not one of {', '.join(sorted(STATES))}")
            states.append(state)
    stale_raw = _single(request, "stale")
    if stale_raw not in (None, "true", "false"):
        raise _bad("stale", "must be true or false")
    return JobFilter(
        states=tuple(dict.fromkeys(states)),
        types=_csv(request, "type"),
        regions=_csv(request, "region"),
        media_id=_single(request, "media_id"),
        stale=None if stale_raw is None else stale_raw == "true",
        submitted_after=_time(request, "submitted_after"),
        submitted_before=_time(request, "submitted_before"),
    )


def parse_limit(request: Request) -> int:
    raw = _single(request, "limit")
    if raw is None:
        return queries.DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit():
        raise _bad("limit", "not an integer")
    limit = int(raw)
    if not 1 <= limit <= queries.MAX_LIMIT:
        raise _bad("limit", f"must be between 1 and {queries.MAX_LIMIT}")
    return limit


# --- routes -----------------------------------------------------------------------------------


# A database that cannot be reached (down, restarting, SQLite file unopenable, pool exhausted).
UNREACHABLE = (OperationalError, InterfaceError, SQLAlchemyTimeout, OSError)


@asynccontextmanager
async def reading(database: Database) -> AsyncIterator[AsyncSession]:
    """A read session; an unreachable database is a 503 the caller may retry, never a 500."""
    try:
        async with database.session() as session:
            yield session
    except UNREACHABLE as exc:
        raise Unavailable(f"database unavailable ({type(exc).__name__}); retry later") from None


def read_session(request: Request) -> AbstractAsyncContextManager[AsyncSession]:
    return reading(context_of(request).database)


def caller_of(request: Request) -> str:
    """Whom a held request counts against (TRACKER_WAIT_PER_CALLER)."""
    return caller_key(presented_token(request), request.client.host if request.client else None)


async def get_job(request: Request) -> JSONResponse:
    """The job; with `?wait=30s` (at most 60s) a long-poll: at once when the job is final, else
    when it next changes, else at the timeout, with its state then (tracker/notify/stream.py)."""
    require_api_token(request)
    job_id = request.path_params["job_id"]
    wait = parse_wait(_single(request, "wait"))
    async with read_session(request) as session:
        job = await queries.get_job(session, job_id)
    if job is None:
        raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
    if wait and job.state not in FINAL:
        context = context_of(request)
        database, settings = context.database, context.settings
        with waiters_of(database).hold(
            caller_of(request), settings.wait_per_caller, settings.wait_max
        ):
            seen = await job_seq(database, job.id)
            async with read_session(request) as session:  # a change may have come meanwhile
                job = await queries.get_job(session, job_id) or job
            if job.state not in FINAL and await wait_for_job_change(database, job.id, seen, wait):
                async with read_session(request) as session:
                    job = await queries.get_job(session, job_id) or job
    return JSONResponse(job_json(job))


async def list_jobs(request: Request) -> JSONResponse:
    require_api_token(request)
    job_filter, limit = parse_filter(request), parse_limit(request)
    cursor = _single(request, "cursor")
    async with read_session(request) as session:
        page = await queries.list_jobs(session, job_filter, limit=limit, cursor=cursor)
    body: schemas.JobPage = {
        "items": [job_json(job) for job in page.items],
        "next_cursor": page.next_cursor,
    }
    return JSONResponse(body)


async def get_job_events(request: Request) -> JSONResponse:
    require_api_token(request)
    job_id = request.path_params["job_id"]
    async with read_session(request) as session:
        events = await queries.job_events(session, job_id)
        if not events and await queries.get_job(session, job_id) is None:
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
    body: schemas.EventList = {"items": [event_json(event) for event in events]}
    return JSONResponse(body)


async def get_media_jobs(request: Request) -> JSONResponse:
    require_api_token(request)
    async with read_session(request) as session:
        jobs = await queries.media_jobs(session, request.path_params["media_id"])
    body: schemas.JobList = {"items": [job_json(job) for job in jobs]}
    return JSONResponse(body)


async def get_stats(request: Request) -> JSONResponse:
    require_api_token(request)
    context = context_of(request)
    now = context.clock()
    stats = await context.stats.get(lambda: read_session(request), now)
    body = stats_json(stats, now)
    if context.mns is not None:
        body["mns"] = consumer_json(context.mns)
    async with read_session(request) as session:  # a few rows: fresh, not from the cache
        body["budget"] = await budget_today(session, Budget.of(context.settings), now)
    return JSONResponse(body)


class VodNotConfigured(Unavailable):
    code = "vod_not_configured"


async def post_jobs(request: Request) -> JSONResponse:
    """201 with the new jobs; 200 when every type was already live or done, or for a dry run;
    VOD's refusal or an unknown outcome with the error's own status (tracker/vod/errors.py),
    VOD's Code and RequestId. Before anything is claimed or sent: 404 `media_not_found`, 409
    `duration_unknown`, 429 `budget_exceeded` (with Retry-After), or VOD's refusal of
    GetVideoInfo."""
    require_api_token(request)
    body = await read_json_object(request)
    for name in ("config", "user_data"):
        if not isinstance(body.get(name), dict | None):  # JSON text is for the command line
            raise InvalidSubmission(f"{name}: must be a JSON object")
    context = context_of(request)
    submit = validate_request(
        body.get("media_id"),
        body.get("types"),
        body.get("config"),
        body.get("user_data"),
        region=_or_default(body.get("region"), context.settings.vod_region),
    )
    force, dry_run = (_flag(body, name) for name in ("force", "dry_run"))
    if context.vod is None:
        raise VodNotConfigured(f"VOD credentials are not configured: set {SOURCES_HINT}")
    assert submit.region is not None  # validate_request sets it
    vod = context.vod.for_region(submit.region)
    budget = Budget.of(context.settings)
    try:
        if dry_run:
            estimate = await estimate_media(
                context.database, vod, submit, context.clock, budget, force=force
            )
            return JSONResponse(dry_run_json(estimate, budget))
        done = await submit_media(
            context.database, vod, submit, context.clock, force=force, budget=budget
        )
    except (VodError, VodUnreachable) as exc:  # GetVideoInfo: nothing claimed, nothing sent
        return _submit_error(exc, [])
    jobs = [job_json(job) for job in done.jobs]
    if done.error is None:
        submitted: schemas.SubmittedJobs = {"jobs": jobs}
        return JSONResponse(submitted, status_code=201 if done.sent else 200)
    return _submit_error(done.error, jobs)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidSubmission(f"{name}: must be true or false")
    return value


def _submit_error(error: TrackerError, jobs: list[schemas.Job]) -> JSONResponse:
    code, request_id = error_fields(error)
    refused: schemas.SubmitError = {
        "error": error.code,
        "message": error.message,
        "Code": code,
        "Message": error.message,
        "RequestId": request_id,
        "jobs": jobs,
    }
    return JSONResponse(refused, status_code=error.status_code)


def _or_default(value: object, default: str) -> object:
    return default if value is None else value


async def jobs(request: Request) -> JSONResponse:
    """/jobs: POST submits (here), GET lists (above). One route, so a 405 and OPTIONS
    name both methods;"""
    if request.method == "POST":
        return await post_jobs(request)
    return await list_jobs(request)


def any_id_route(path: str, endpoint: Any) -> Route:
    """A GET route whose `{name}` parameters match any non-empty id, `/` included.

    Starlette's `{name}` stops at `/`, and a client's `%2F` is decoded before routing, so a
    stored id holding one (from VOD's SubmitAIJob answer, a row older than the receiver's id
    rule, or a MediaId `POST /jobs` accepts) would answer 404. The template stays `path`, as
    telemetry and the OpenAPI document name it. A longer route must come before its prefix
    (`/jobs/{job_id}/events` before `/jobs/{job_id}`).
    """
    route = Route(path, endpoint, methods=["GET"])
    parts = re.split(r"\{(\w+)\}", path)  # literal, name, literal, ...
    pattern = "".join(f"(?P<{p}>.+)" if i % 2 else re.escape(p) for i, p in enumerate(parts))
    route.path_regex = re.compile(f"^{pattern}$", re.DOTALL)  # a decoded %0A is an id too
    return route


routes = [
    Route("/jobs", jobs, methods=["GET", "POST"]),
    any_id_route("/jobs/{job_id}/events", get_job_events),
    any_id_route("/jobs/{job_id}", get_job),
    any_id_route("/media/{media_id}/jobs", get_media_jobs),
    Route("/stats", get_stats, methods=["GET"]),
]
