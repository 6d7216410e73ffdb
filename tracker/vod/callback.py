"""Is VOD's event notification aimed at this tracker (HTTP) or its MNS queue? Check it and plan
SetMessageCallback (6.1, 6.7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tracker.config import Settings
from tracker.errors import ConfigError

AI_EVENTS = frozenset({"AIVideoTagComplete", "AIMediaDNAComplete"})
FIELDS = ("CallbackType", "CallbackURL", "EventTypeList", "AuthSwitch", "AuthKey")
MNS_FIELDS = ("CallbackType", "MnsEndpoint", "MnsQueueName", "EventTypeList")


@dataclass(frozen=True)
class Check:
    """One field of VOD's configuration against what the tracker needs; keys are never shown."""

    field: str
    current: str
    wanted: str
    ok: bool


def event_types(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def covers_ai_events(value: str) -> bool:
    """`AIComplete` (the console's "Video AI processing completed") or `ALL` enable every AI
    event; otherwise both concrete event types must be listed."""
    items = set(event_types(value))
    return bool(items & {"ALL", "AIComplete"}) or items >= AI_EVENTS


def describe_key(key: str, settings: Settings) -> str:
    if not key:
        return "(none)"
    ours = [k.get_secret_value() for k in settings.callback_auth_key]
    return f"our key #{ours.index(key) + 1}" if key in ours else "another key"


def check_callback(current: Mapping[str, Any], settings: Settings) -> list[Check]:
    """Every field that decides whether AI events reach this tracker, signed with our key."""
    value = {name: str(current.get(name) or "") for name in FIELDS}
    keys = [k.get_secret_value() for k in settings.callback_auth_key]
    return [
        Check(
            "CallbackType",
            value["CallbackType"],
            "HTTP",
            value["CallbackType"].upper() == "HTTP",
        ),
        Check(
            "CallbackURL",
            value["CallbackURL"],
            settings.callback_url or "(TRACKER_CALLBACK_URL is unset)",
            bool(settings.callback_url) and value["CallbackURL"] == settings.callback_url,
        ),
        Check(
            "EventTypeList",
            value["EventTypeList"],
            "AIComplete (or ALL)",
            covers_ai_events(value["EventTypeList"]),
        ),
        Check("AuthSwitch", value["AuthSwitch"], "on", value["AuthSwitch"] == "on"),
        Check(
            "AuthKey",
            describe_key(value["AuthKey"], settings),
            "our key #1" if keys else "(TRACKER_CALLBACK_AUTH_KEY is unset)",
            bool(keys) and value["AuthKey"] in keys,
        ),
    ]


def plan_callback(current: Mapping[str, Any], settings: Settings) -> dict[str, str]:
    """The SetMessageCallback parameters that aim AI events at us, signed with our first key.

    Other subscribed event types are kept: the account may use them for something else.
    """
    if not settings.callback_url:
        raise ConfigError("TRACKER_CALLBACK_URL is unset: where should VOD send events?")
    if not settings.callback_auth_key:
        raise ConfigError("TRACKER_CALLBACK_AUTH_KEY is unset: VOD must sign its callbacks")
    if len(settings.callback_url.encode()) > 256:
        raise ConfigError("TRACKER_CALLBACK_URL is longer than VOD's 256 bytes")
    return {
        "CallbackType": "HTTP",
        "CallbackURL": settings.callback_url,
        "EventTypeList": _with_ai_events(current),
        "AuthSwitch": "on",
        "AuthKey": settings.callback_auth_key[0].get_secret_value(),
    }


def _with_ai_events(current: Mapping[str, Any]) -> str:
    events = str(current.get("EventTypeList") or "")
    if not covers_ai_events(events):
        events = ",".join([*event_types(events), "AIComplete"])
    return events


def check_mns_callback(current: Mapping[str, Any], endpoint: str, queue: str) -> list[Check]:
    """Every field that decides whether AI events are written to our MNS queue (6.7)."""
    value = {name: str(current.get(name) or "") for name in MNS_FIELDS}
    return [
        Check("CallbackType", value["CallbackType"], "MNS", value["CallbackType"].upper() == "MNS"),
        Check(
            "MnsEndpoint",
            value["MnsEndpoint"],
            endpoint,
            value["MnsEndpoint"].rstrip("/") == endpoint.rstrip("/"),
        ),
        Check("MnsQueueName", value["MnsQueueName"], queue, value["MnsQueueName"] == queue),
        Check(
            "EventTypeList",
            value["EventTypeList"],
            "AIComplete (or ALL)",
            covers_ai_events(value["EventTypeList"]),
        ),
    ]


def plan_mns_callback(current: Mapping[str, Any], endpoint: str, queue: str) -> dict[str, str]:
    """SetMessageCallback parameters that have VOD write AI events to the queue. VOD needs the
    queue's public endpoint (mns-reference.md 1); other subscribed event types are kept."""
    return {
        "CallbackType": "MNS",
        "MnsEndpoint": endpoint.rstrip("/"),
        "MnsQueueName": queue,
        "EventTypeList": _with_ai_events(current),
    }


def changes(current: Mapping[str, Any], plan: Mapping[str, str], settings: Settings) -> list[Check]:
    """What `plan` changes, for printing before it is applied (`ok` = unchanged)."""
    shown: list[Check] = []
    for name, wanted in plan.items():
        old = str(current.get(name) or "")
        if name == "AuthKey":
            shown.append(
                Check(
                    name, describe_key(old, settings), describe_key(wanted, settings), old == wanted
                )
            )
        else:
            shown.append(Check(name, old, wanted, old == wanted))
    return shown
