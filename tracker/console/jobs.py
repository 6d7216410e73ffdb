"""`/ui/jobs`, `/ui/jobs/{job_id}`, `/ui/media/{media_id}`: the list (filters in the URL, cursor
paging on the same query and indexes as `GET /jobs`), a job's whole story, a media's jobs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tracker.api import queries
from tracker.api.queries import JobFilter
from tracker.api.routes import parse_time
from tracker.console import reads, results, timeline
from tracker.console.web import STATES, page, reading, render
from tracker.errors import BadRequest, JobNotFound, NotFound
from tracker.models import Job, Submission
from tracker.notify.changes import MAX_PAGE, ChangeFilter, latest_seq, list_changes
from tracker.shapes import job_json
from tracker.vod import JOB_TYPES

PAGE_SIZE = 50
FIELDS = ("state", "type", "region", "stale", "media_id", "from", "to", "q", "cursor")
LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")


def _time(raw: str, name: str) -> datetime:
    """A form's `datetime-local` value, read as UTC (the form says so), or RFC 3339."""
    if LOCAL_TIME.fullmatch(raw):
        try:
            return datetime.fromisoformat(raw).replace(tzinfo=UTC)
        except ValueError:
            raise BadRequest(f"{name}: not a valid date and time") from None
    return parse_time(raw, name)


def form_values(request: Request) -> dict[str, str]:
    """The filters as given (empty fields dropped), for the form and the paging links."""
    values: dict[str, str] = {}
    for name in FIELDS:
        found = [v.strip() for v in request.query_params.getlist(name) if v.strip()]
        if len(found) > 1:
            raise BadRequest(f"{name}: given more than once")
        if found:
            values[name] = found[0][:256]
    return values


def job_filter(values: dict[str, str]) -> JobFilter:
    state, job_type = values.get("state"), values.get("type")
    if state is not None and state not in STATES:
        raise BadRequest(f"state: {state!r} is not one of {', '.join(STATES)}")
    stale = values.get("stale")
    if stale not in (None, "true", "false"):
        raise BadRequest("stale: yes, no or either")
    return JobFilter(
        states=(state,) if state else (),
        types=(job_type,) if job_type else (),
        regions=(values["region"],) if values.get("region") else (),
        media_id=values.get("media_id"),
        stale=None if stale is None else stale == "true",
        submitted_after=_time(values["from"], "from") if "from" in values else None,
        submitted_before=_time(values["to"], "to") if "to" in values else None,
    )


def job_link(job: Job) -> str:
    """A job's page: by its JobId, or by row for a job VOD has not named yet."""
    if job.job_id:
        return "/ui/jobs/" + quote(job.job_id, safe="")
    return f"/ui/rows/{job.id}"


@page
async def job_list(request: Request) -> Response:
    values = form_values(request)
    error = None
    items: list[Job] = []
    next_cursor = None
    search = values.pop("q", None)
    async with reading(request) as session:
        if search:  # a JobId opens its job; anything else is a media id
            found = await queries.get_job(session, search)
            if found is not None:
                return RedirectResponse(job_link(found), status_code=303)
            values["media_id"] = search
        try:
            cursor = values.pop("cursor", None)
            page_ = await queries.list_jobs(
                session, job_filter(values), limit=PAGE_SIZE, cursor=cursor
            )
            items, next_cursor = page_.items, page_.next_cursor
            if cursor:
                values["cursor"] = cursor
        except BadRequest as exc:
            error = exc.message
        after = await latest_seq(session)
    first_page = {k: v for k, v in values.items() if k != "cursor"}
    return render(
        request,
        "jobs.html",
        status_code=400 if error else 200,
        values=values,
        error=error,
        jobs=items,
        link=job_link,
        types=JOB_TYPES,
        next_url=(
            "/ui/jobs?" + urlencode({**first_page, "cursor": next_cursor}) if next_cursor else None
        ),
        first_url="/ui/jobs?" + urlencode(first_page) if "cursor" in values else None,
        stream=None if "cursor" in values else "/ui/changes",  # later pages hold still
        after=after,
        live="list",
    )


async def _job_page(request: Request, job: Job | None, wanted: str) -> Response:
    if job is None:
        raise JobNotFound(f"no job {wanted!r}: it may have another id, or was never tracked")
    async with reading(request) as session:
        changes = list(await list_changes(session, 0, MAX_PAGE, ChangeFilter(job_row_id=job.id)))
        events = await queries.job_events(session, job.job_id) if job.job_id else []
        seqs = [int(change.seq) for change in changes if change.seq is not None]
        deliveries = await reads.job_delivery_details(session, seqs)
        summary = await reads.job_deliveries(session, seqs)
        submission = await session.get(Submission, job.submission_id) if job.submission_id else None
        after = await latest_seq(session)
    tags = results.video_tags(job.result) if job.type == "AIVideoTag" else None
    matches = results.dna_matches(job.result) if job.type == "AIMediaDNA" else None
    subscribers: dict[int, list[Any]] = {}
    for delivery, kind, attempts in deliveries:
        subscribers.setdefault(delivery.subscription_id, []).append((delivery, kind, attempts))
    return render(
        request,
        "job.html",
        job=job,
        shape=job_json(job),
        entries=timeline.build(job, submission, changes, events, summary),
        events=events,
        verdict=timeline.verdict,
        tags=tags,
        matches=matches,
        subscribers=subscribers,
        submission=submission,
        stream="/ui/changes?" + urlencode({"media_id": job.media_id}),
        after=after,
        live="job",
    )


@page
async def job_page(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    async with reading(request) as session:
        job = await queries.get_job(session, job_id)
    return await _job_page(request, job, job_id)


@page
async def row_page(request: Request) -> Response:
    row_id = request.path_params["row_id"]
    async with reading(request) as session:
        job = await session.get(Job, row_id)
    if job is not None and job.job_id:  # the canonical page, once VOD named it
        return RedirectResponse(job_link(job), status_code=303)
    return await _job_page(request, job, f"row {row_id}")


@page
async def media_page(request: Request) -> Response:
    media_id = request.path_params["media_id"]
    async with reading(request) as session:
        jobs = await queries.media_jobs(session, media_id)
        after = await latest_seq(session)
    if not jobs:
        raise NotFound(f"no job of media {media_id!r}")
    return render(
        request,
        "media.html",
        media_id=media_id,
        jobs=jobs,
        link=job_link,
        stream="/ui/changes?" + urlencode({"media_id": media_id}),
        after=after,
        live="list",
    )
