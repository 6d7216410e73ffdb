"""The HTTP shapes, each declared once: the routes build them, `openapi.py` turns them into the
document's components (pydantic makes the JSON Schema), and mypy checks every builder against them.
"""

from __future__ import annotations

from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,  # pydantic needs these on Python < 3.12
)

from pydantic import Field, TypeAdapter, WithJsonSchema
from typing_extensions import TypedDict

from tracker.api.queries import DEFAULT_LIMIT, MAX_LIMIT
from tracker.ingest.queue import STATES as MNS_STATES
from tracker.models import JobState, Origin
from tracker.submit.validate import EXTEND_LIMIT, REGION_LIMIT, REGION_PATTERN
from tracker.vod import JOB_TYPES, MEDIA_ID

Time = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
State = Annotated[str, WithJsonSchema({"type": "string", "enum": [s.value for s in JobState]})]
OriginName = Annotated[str, WithJsonSchema({"type": "string", "enum": [o.value for o in Origin]})]
JobType = Literal["AIVideoTag", "AIMediaDNA"]
assert set(JobType.__args__) == set(JOB_TYPES)  # type: ignore[attr-defined]
TYPE_LIST = f"^({'|'.join(JOB_TYPES)})(,({'|'.join(JOB_TYPES)}))*$"
MEDIA_ID_PATTERN = f"^{MEDIA_ID.pattern}$"
PAGE = {"minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}


class Error(TypedDict):
    error: Annotated[str, Field(description="machine-readable code")]
    message: str
    parameter: NotRequired[Annotated[str, Field(description="the query parameter at fault")]]


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
    pending_status: NotRequired[
        Annotated[str, Field(description="a callback outcome awaiting confirmation by ListAIJob")]
    ]
    pending_since: NotRequired[Time | None]


class JobPage(TypedDict):
    items: list[Job]
    next_cursor: Annotated[str | None, Field(description="pass as `cursor` for the next page")]


class JobList(TypedDict):
    items: list[Job]


class Event(TypedDict):
    id: int
    event_type: str | None
    job_id: str | None
    media_id: str | None
    status: str | None
    event_time: Time | None
    received_at: Time
    deliveries: Annotated[int, Field(ge=1)]
    applied: Annotated[bool | None, Field(description="null: not processed yet")]
    applied_at: Time | None
    reason: Annotated[str | None, Field(description="why not applied")]
    body: Annotated[str, Field(description="the raw callback body")]


class EventList(TypedDict):
    items: list[Event]


class Heartbeat(TypedDict):
    name: str
    owner: str
    started_at: Time
    finished_at: Time | None
    duration_s: float | None
    ok: bool | None
    summary: str | None


class JobCounts(TypedDict):
    by_type: dict[str, dict[str, int]]
    by_state: dict[str, int]
    total: int
    stale: int
    oldest_unfinished_submitted_at: Time | None
    oldest_unfinished_age_s: float | None


class CallbackCounts(TypedDict):
    received: int
    duplicate: int
    rejected: Annotated[int, Field(description="refused before storage, by this process")]


class SubscriptionCounts(TypedDict):
    enabled: int
    disabled: Annotated[
        int, Field(description="410 Gone, failing too long, or by hand: nothing is sent to them")
    ]
    deliveries_pending: Annotated[int, Field(description="waiting for an attempt or being sent")]
    deliveries_failed: Annotated[int, Field(description="the dead letters, replayable")]


class MnsConsumer(TypedDict):
    """This process's MNS consumer, when TRACKER_MNS_ENDPOINT and _QUEUE are set."""

    state: Annotated[str, WithJsonSchema({"type": "string", "enum": list(MNS_STATES)})]
    since: NotRequired[Time]
    queue: NotRequired[str]
    endpoint: NotRequired[str]
    last_error: NotRequired[str | None]
    last_message_at: NotRequired[Time | None]
    messages: NotRequired[
        Annotated[
            dict[str, int],
            Field(
                description="counts by outcome: stored, duplicate, malformed, not_stored, "
                "deleted, expired_handles"
            ),
        ]
    ]


class Stats(TypedDict):
    computed_at: Time
    jobs: JobCounts
    callbacks_last_hour: CallbackCounts
    subscriptions: SubscriptionCounts
    mns: NotRequired[MnsConsumer]
    heartbeats: list[Heartbeat]


class Probe(TypedDict):
    status: str
    reason: NotRequired[str]
    mns: NotRequired[MnsConsumer]


class MessageCallback(TypedDict):
    CallbackURL: Annotated[str, Field(pattern="^https?://")]


class UserData(TypedDict, total=False):
    # EXTEND_LIMIT bytes hold at least a quarter as many characters in UTF-8; longer ASCII text
    # is accepted too (validate.py counts bytes).
    Extend: Annotated[str, Field(max_length=EXTEND_LIMIT // 4)]
    MessageCallback: MessageCallback


class SubmitRequest(TypedDict):
    media_id: Annotated[
        str, Field(pattern=MEDIA_ID_PATTERN, examples=["3D3D12340d92c641401fab46a0b847"])
    ]
    types: (
        Annotated[list[JobType], Field(min_length=1)]
        | Annotated[str, Field(pattern=TYPE_LIST, examples=["AIVideoTag,AIMediaDNA"])]
    )
    config: NotRequired[Annotated[dict[str, Any] | None, Field(description="SubmitAIJob `Config`")]]
    user_data: NotRequired[
        Annotated[
            UserData | None,
            Field(
                description="SubmitAIJob `UserData`; VOD echoes `Extend` in the callback, and "
                "`MessageCallback.CallbackURL` overrides the callback URL"
            ),
        ]
    ]
    region: NotRequired[
        Annotated[
            str | None,
            Field(
                pattern=REGION_PATTERN,
                max_length=REGION_LIMIT,
                examples=["cn-beijing"],
                description="VOD region to submit in (default TRACKER_VOD_REGION); tagging is "
                "offered in cn-beijing and cn-shanghai, fingerprinting also in ap-southeast-1",
            ),
        ]
    ]
    force: NotRequired[Annotated[bool, Field(description="resubmit even if live")]]


class SubmittedJobs(TypedDict):
    jobs: list[Job]


class SubmitError(TypedDict):
    error: str
    message: str
    Code: Annotated[str, Field(description="VOD's error code, or ours if VOD never answered")]
    Message: str
    RequestId: str | None
    jobs: list[Job]


class CallbackAck(TypedDict):
    status: Literal["stored", "duplicate"]


SHAPES: tuple[type, ...] = (
    Error,
    Job,
    JobPage,
    JobList,
    Event,
    EventList,
    Stats,
    Probe,
    SubmitRequest,
    SubmittedJobs,
    SubmitError,
    CallbackAck,
)


def components() -> dict[str, Any]:
    """Every shape's JSON Schema, keyed by its name, references pointing into the document."""
    mode: Literal["serialization"] = "serialization"
    adapters = [(shape.__name__, mode, TypeAdapter[Any](shape)) for shape in SHAPES]
    _, schemas = TypeAdapter.json_schemas(adapters, ref_template="#/components/schemas/{model}")
    return dict(schemas.get("$defs", {}))
