"""The public shape of a job, built by one function: for every answer that shows a job (`GET
/jobs`, `POST /jobs`, `tracker jobs`) and every change of one (the feed, the stream, the webhooks).

tracker/api/schemas/ is where the HTTP bodies are listed, these two among them; they are declared
here, in the core, because the notify wing sends them too and the core imports no root. Pure
builders: no session, no I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import (
    Annotated,
    Any,
    NotRequired,  # pydantic needs these on Python < 3.12
    Protocol,
)

from pydantic import Field, WithJsonSchema
from typing_extensions import TypedDict

from tracker.clock import iso
from tracker.models import JobState, Origin

# What the change log's triggers write (migration 0004): a state change is typed by the new
# state (`processing` is `job.submitted`), a stale flag turned on alone is `job.stale`.
JOB_CHANGE_TYPES = (
    "job.submitted",
    "job.submit_failed",
    "job.submit_unknown",
    "job.succeeded",
    "job.failed",
    "job.lost",
    "job.stale",
)
# A type's daily budget ran out: written by the submitter (tracker/submit/budget.py) in the
# transaction of the reservation that found it so, at most once per UTC day and type. Its
# `data` is a `BudgetExhausted`, not a job.
BUDGET_EXHAUSTED = "budget.exhausted"
CHANGE_TYPES = (*JOB_CHANGE_TYPES, BUDGET_EXHAUSTED)

Time = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
State = Annotated[str, WithJsonSchema({"type": "string", "enum": [s.value for s in JobState]})]
OriginName = Annotated[str, WithJsonSchema({"type": "string", "enum": [o.value for o in Origin]})]
ChangeType = Annotated[str, WithJsonSchema({"type": "string", "enum": list(CHANGE_TYPES)})]


class Job(TypedDict):
    job_id: Annotated[str | None, Field(description="VOD JobId; null if never submitted")]
    media_id: str
    type: Annotated[str, Field(examples=["AIVideoTag"])]
    region: Annotated[
        str | None,
        Field(
            examples=["cn-shanghai"],
            description="VOD region it was submitted in; null for a job VOD told us of by "
            "callback until reconciliation finds it",
        ),
    ]
    state: State
    stale: bool
    stale_at: Time | None
    origin: OriginName
    status: Annotated[str | None, Field(description="VOD's status, lower case")]
    code: str | None
    message: str | None
    result: Any
    submitted_at: Time
    updated_at: Time
    completed_at: Time | None
    duration_s: Annotated[
        float | None,
        Field(
            description="seconds of video, as VOD's GetVideoInfo said before the submission; "
            "null for jobs VOD told us of by callback and media VOD had not analysed"
        ),
    ]
    pending_status: NotRequired[
        Annotated[str, Field(description="a callback outcome awaiting confirmation by ListAIJob")]
    ]
    pending_since: NotRequired[Time | None]


class ChangedJob(Job):
    """The job as a change left it: what `GET /jobs/{id}` showed then, plus the change's place."""

    seq: int
    previous_state: Annotated[State | None, Field(description="null: the job was created")]


class BudgetExhausted(TypedDict):
    """`budget.exhausted`'s data: a job type's budget for a UTC day ran out (a submission was
    refused for it, or the day's minutes were all reserved)."""

    type: Annotated[str, Field(examples=["AIVideoTag"], description="the job type")]
    day: Annotated[str, Field(description="the UTC day, YYYY-MM-DD")]
    minutes_limit: Annotated[float, Field(description="TRACKER_DAILY_MINUTES of the type")]
    minutes_used: Annotated[float, Field(description="minutes of video reserved that day")]
    minutes_requested: Annotated[
        float, Field(description="minutes of the submission that found the budget exhausted")
    ]
    resets_at: Annotated[Time, Field(description="the next UTC midnight")]


class Change(TypedDict):
    """One change as the feed, the stream and the webhooks carry it (the webhook's payload is
    this without `seq`, which its `webhook-id` header carries). `data` is the job for `job.*`
    changes, a `BudgetExhausted` for `budget.exhausted`."""

    seq: int
    type: ChangeType
    timestamp: Time
    data: ChangedJob | BudgetExhausted


class JobFields(Protocol):
    """What the shape is built from: a `jobs` row, or a change's copy of one (its snapshot)."""

    @property
    def job_id(self) -> str | None: ...
    @property
    def media_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def region(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def stale(self) -> bool: ...
    @property
    def stale_at(self) -> datetime | None: ...
    @property
    def origin(self) -> str: ...
    @property
    def status(self) -> str | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def result(self) -> Any: ...
    @property
    def submitted_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def completed_at(self) -> datetime | None: ...
    @property
    def duration_s(self) -> float | None: ...
    @property
    def pending_status(self) -> str | None: ...
    @property
    def pending_since(self) -> datetime | None: ...


def job_json(job: JobFields) -> Job:
    """The one JSON shape of a job: a plain dict build, as lists of a million jobs page through
    it. `pending_*` only while a callback's outcome awaits confirmation."""
    body: Job = {
        "job_id": job.job_id,
        "media_id": job.media_id,
        "type": job.type,
        "region": job.region,
        "state": job.state,
        "stale": bool(job.stale),
        "stale_at": iso(job.stale_at),
        "origin": job.origin,
        "status": job.status,
        "code": job.code,
        "message": job.message,
        "result": job.result,
        "submitted_at": iso(job.submitted_at),
        "updated_at": iso(job.updated_at),
        "completed_at": iso(job.completed_at),
        "duration_s": job.duration_s,
    }
    if job.pending_status is not None:
        body["pending_status"] = job.pending_status
        body["pending_since"] = iso(job.pending_since)
    return body
