"""HTTP: every body of the API, each declared once as a TypedDict. The routes build them (mypy
checks each builder against its shape); `components()` turns them into the OpenAPI document's
schemas (pydantic makes the JSON Schema), with the limits imported from the code that enforces
them. The job, its change and the error are declared in the core (tracker/shapes.py,
tracker/errors.py), which builds them for every layer, and the notification API's in notify.py;
all are listed here.
"""

from __future__ import annotations

from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,  # pydantic needs these on Python < 3.12
)

from pydantic import Field, TypeAdapter
from typing_extensions import TypedDict

from tracker.api.budget import BudgetDay, DryRun
from tracker.api.queries import DEFAULT_LIMIT, MAX_LIMIT
from tracker.api.schemas.common import enum as _enum
from tracker.api.schemas.notify import (
    Attempt,
    ChangePage,
    Delivery,
    DeliveryPage,
    NewSubscription,
    Ping,
    PingAccepted,
    PingList,
    Replay,
    ReplayAccepted,
    RetryAccepted,
    Subscription,
    SubscriptionList,
    SubscriptionPatch,
)
from tracker.config import REGION_LIMIT, REGION_PATTERN
from tracker.errors import Error
from tracker.ingest.queue import STATES as MNS_STATES
from tracker.ingest.receiver import MAX_BODY
from tracker.scheduler.heartbeats import SEVERITY
from tracker.shapes import Change, ChangedJob, Job, Time
from tracker.submit.budget import BudgetRefusal
from tracker.submit.validate import EXTEND_LIMIT
from tracker.vod import EVENT_TYPES, JOB_ID, JOB_TYPES, MEDIA_ID

# Declared in the core, and the notification bodies in notify.py: listed here with the rest.
__all__ = [
    "Change",
    "ChangedJob",
    "Error",
    "Job",
    "Attempt",
    "ChangePage",
    "Delivery",
    "DeliveryPage",
    "NewSubscription",
    "Ping",
    "PingAccepted",
    "PingList",
    "Replay",
    "ReplayAccepted",
    "RetryAccepted",
    "Subscription",
    "SubscriptionList",
    "SubscriptionPatch",
]

JobType = Literal["AIVideoTag", "AIMediaDNA"]
assert set(JobType.__args__) == set(JOB_TYPES)  # type: ignore[attr-defined]
TYPE_LIST = f"^({'|'.join(JOB_TYPES)})(,({'|'.join(JOB_TYPES)}))*$"
MEDIA_ID_PATTERN = f"^{MEDIA_ID.pattern}$"
PAGE = {"minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}


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

    state: Annotated[str, _enum(*MNS_STATES)]
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


class ScheduledJob(TypedDict):
    """One scheduled job's last run (tracker/scheduler/heartbeats.py), judged by its interval."""

    state: Annotated[str, _enum(*SEVERITY)]
    every_s: NotRequired[float]
    owner: NotRequired[str]
    started_at: NotRequired[Time]
    finished_at: NotRequired[Time | None]
    duration_s: NotRequired[float | None]
    ok: NotRequired[bool | None]
    summary: NotRequired[str | None]


class Lease(TypedDict):
    owner: str
    expires_at: Time


class SchedulerStatus(TypedDict):
    status: Annotated[
        str, _enum(*SEVERITY, "unknown"), Field(description="the worst of the jobs' states")
    ]
    reason: NotRequired[Annotated[str, Field(description="why it is unknown")]]
    jobs: NotRequired[dict[str, ScheduledJob]]
    reconcile_lease: NotRequired[Lease | None]
    in_process: NotRequired[Annotated[bool, Field(description="this process runs it")]]


class Stats(TypedDict):
    computed_at: Time
    jobs: JobCounts
    callbacks_last_hour: CallbackCounts
    subscriptions: SubscriptionCounts
    mns: NotRequired[MnsConsumer]
    heartbeats: list[Heartbeat]
    budget: Annotated[
        dict[str, BudgetDay],
        Field(description="today's spend per job type, read fresh (not cached)"),
    ]


class Probe(TypedDict):
    status: Literal["ok", "ready", "unavailable"]
    reason: NotRequired[Annotated[str, Field(description="why not ready")]]
    revision: NotRequired[Annotated[str, Field(description="the schema's Alembic revision")]]
    scheduler: NotRequired[
        Annotated[SchedulerStatus, Field(description="only `status` without a token")]
    ]
    mns: NotRequired[
        Annotated[MnsConsumer, Field(description="only `state` without a token; never gating")]
    ]


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
    dry_run: NotRequired[
        Annotated[
            bool,
            Field(
                description="only say what it would submit and spend (VOD's durations, the "
                "day's budget); nothing is reserved or submitted"
            ),
        ]
    ]


class SubmittedJobs(TypedDict):
    jobs: list[Job]


class SubmitError(TypedDict):
    error: str
    message: str
    Code: Annotated[str, Field(description="VOD's error code, or ours if VOD never answered")]
    Message: str
    RequestId: str | None
    jobs: list[Job]


# --- POST /callbacks/vod (tracker/ingest/receiver.py) -----------------------------------------

# What tracker/ingest/events.py applies: the completion events of the tracked job types.
AI_EVENT = f"^({'|'.join(EVENT_TYPES)})$"
EVENT_TYPE_LIMIT = 64  # tracker/ingest/events.py keeps this much of EventType


class VodAIEvent(TypedDict):
    EventType: Annotated[str, Field(min_length=1, max_length=EVENT_TYPE_LIMIT, pattern=AI_EVENT)]
    EventTime: NotRequired[
        Annotated[Any, Field(description="UTC; read leniently (`...:17Z`, `...:17:025Z`)")]
    ]
    JobId: Annotated[str, Field(pattern=f"^{JOB_ID.pattern}$")]
    MediaId: NotRequired[Annotated[str, Field(pattern=MEDIA_ID_PATTERN)] | None]
    Status: Annotated[str, Field(pattern="^([Ss][Uu][Cc][Cc][Ee][Ss][Ss]|[Ff][Aa][Ii][Ll])$")]
    Code: NotRequired[Any]
    Message: NotRequired[Any]
    Data: NotRequired[Annotated[Any, Field(description="the result as a JSON-encoded string")]]


class VodOtherEvent(TypedDict):
    EventType: Annotated[
        str,
        Field(
            min_length=1,
            max_length=EVENT_TYPE_LIMIT,
            pattern="^[^\\u0000]*$",
            json_schema_extra={"not": {"pattern": AI_EVENT}},
        ),
    ]


VodEvent = Annotated[
    VodAIEvent | VodOtherEvent,
    Field(
        description="VOD's event notification body (vod-reference.md 6.2), read as JSON whatever "
        f"the Content-Type; at most {MAX_BODY // 1024} KiB; RFC 8259 JSON (no NaN, Infinity or "
        "1e999). The completion events of the tracked job types are applied to their job; any "
        "other event type (AIMediaAuditComplete too) is stored and acknowledged, not applied."
    ),
]


class CallbackAck(TypedDict):
    status: Literal["stored", "duplicate"]


SHAPES: dict[str, Any] = {
    shape.__name__: shape
    for shape in (
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
        DryRun,
        BudgetRefusal,
        CallbackAck,
        Subscription,
        SubscriptionList,
        NewSubscription,
        SubscriptionPatch,
        DeliveryPage,
        Replay,
        PingAccepted,
        PingList,
        ReplayAccepted,
        RetryAccepted,
        ChangePage,
    )
}
SHAPES["VodEvent"] = VodEvent
# POST /jobs' answers that share a status: a 200 is no news or a dry run; a 429 the daily budget
# or VOD's throttling.
SHAPES["SubmittedOrDryRun"] = SubmittedJobs | DryRun
SHAPES["BudgetOrThrottled"] = BudgetRefusal | SubmitError


def components() -> dict[str, Any]:
    """Every shape's JSON Schema, keyed by its name, references pointing into the document."""
    mode: Literal["serialization"] = "serialization"
    adapters = [(name, mode, TypeAdapter[Any](shape)) for name, shape in SHAPES.items()]
    refs, schemas = TypeAdapter.json_schemas(adapters, ref_template="#/components/schemas/{model}")
    found = dict(schemas.get("$defs", {}))
    for (name, _), schema in refs.items():  # a class is a reference; a union is its schema
        if schema != {"$ref": f"#/components/schemas/{name}"}:
            found[name] = schema
    return found
