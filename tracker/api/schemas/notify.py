"""HTTP: the notification API's bodies (tracker/api/notify.py, subscriptions.py, pings.py), each
declared once as a TypedDict; listed in SHAPES by tracker/api/schemas/__init__.py."""

from __future__ import annotations

from typing import (
    Annotated,
    Literal,
    NotRequired,  # pydantic needs these on Python < 3.12
)

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from tracker.api.schemas.common import enum as _enum
from tracker.notify.attempts import BODY_KEPT
from tracker.notify.egress import MAX_URL
from tracker.notify.pings import PINGS_KEPT
from tracker.notify.subscriptions import DESCRIPTION_LIMIT, SOURCES
from tracker.shapes import Change, ChangeType, Time

# --- notifications (tracker/api/notify.py) ---------------------------------------------------

DeliveryStatus = Annotated[str, _enum("pending", "sending", "succeeded", "failed", "skipped")]


class Subscription(TypedDict):
    id: int
    url: str
    description: str | None
    event_types: list[ChangeType]
    enabled: bool
    disabled_reason: str | None
    source: Annotated[str, _enum(*SOURCES)]
    created_at: Time
    last_success_at: Time | None
    failing_since: Time | None
    secret: NotRequired[
        Annotated[str, Field(description="`whsec_` + base64; shown on creation and rotation only")]
    ]


class SubscriptionList(TypedDict):
    items: list[Subscription]


EventTypes = Annotated[
    list[ChangeType] | None,
    Field(min_length=1, description="omitted or null: every event type"),
]
Description = Annotated[str, Field(max_length=DESCRIPTION_LIMIT)] | None


@with_config(ConfigDict(extra="forbid"))
class NewSubscription(TypedDict):
    url: Annotated[str, Field(max_length=MAX_URL, description="http(s); public addresses")]
    event_types: NotRequired[EventTypes]
    description: NotRequired[Description]


@with_config(ConfigDict(extra="forbid"))
class SubscriptionPatch(TypedDict, total=False):
    url: Annotated[str, Field(max_length=MAX_URL, description="http(s); public addresses")]
    event_types: EventTypes
    description: Description
    enabled: bool


class Attempt(TypedDict):
    attempted_at: Time
    status_code: int | None
    duration_ms: float
    error: str | None
    response_body: Annotated[
        str | None, Field(description=f"the first {BODY_KEPT} characters of the answer")
    ]
    trigger: Annotated[str, _enum("scheduled", "manual")]


class Delivery(TypedDict):
    id: int
    subscription_id: int
    seq: int
    webhook_id: str
    type: Annotated[ChangeType | None, Field(description="null: its change was pruned")]
    status: DeliveryStatus
    attempts: list[Attempt]
    next_attempt_at: Time | None
    last_error: str | None
    created_at: Time


class DeliveryPage(TypedDict):
    items: list[Delivery]
    next_cursor: Annotated[str | None, Field(description="pass as `cursor` for the next page")]


class Replay(TypedDict):
    since: Time


class PingAccepted(TypedDict):
    accepted: Literal[True]
    type: Literal["ping"]
    webhook_id: Annotated[
        str, Field(description="the ping's `webhook-id`; its outcome is listed under /pings")
    ]


class Ping(TypedDict):
    """What a test ping came to, recorded as a delivery's attempt is (never retried)."""

    id: int
    subscription_id: int
    webhook_id: str
    attempted_at: Time
    status_code: Annotated[int | None, Field(description="null: no answer (see `error`)")]
    duration_ms: float
    error: str | None
    response_body: Annotated[
        str | None, Field(description=f"the first {BODY_KEPT} characters of the answer")
    ]


class PingList(TypedDict):
    items: Annotated[list[Ping], Field(description=f"newest first; the last {PINGS_KEPT} are kept")]


class ReplayAccepted(TypedDict):
    queued: Annotated[int, Field(description="failed deliveries queued again")]


class RetryAccepted(TypedDict):
    id: int
    status: DeliveryStatus


class ChangePage(TypedDict):
    items: list[Change]
    next_after: Annotated[int, Field(description="pass as `after` for the next page")]
