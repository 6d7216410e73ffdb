"""HTTP: the OpenAPI paths of the notification routes (tracker/api/notify.py), merged into
tracker/api/openapi.py's document. Their bodies are tracker/api/schemas/'s; the limits stated
here are imported from where they are enforced."""

from __future__ import annotations

from typing import Any

from tracker.api.notify import ID_DIGITS
from tracker.api.subscriptions import MAX_PAGE as MAX_DELIVERIES
from tracker.api.subscriptions import PAGE as DELIVERIES_PAGE
from tracker.notify.changes import DEFAULT_PAGE, MAX_PAGE
from tracker.notify.stream import MAX_WAIT, RETRY_AFTER
from tracker.shapes import CHANGE_TYPES


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


ERRORS = {
    "400": _json("a parameter or the body is invalid", "Error"),
    "401": _json("missing or wrong bearer token", "Error"),
    "503": _json("the database cannot be reached; retry later", "Error"),
}
NOT_FOUND = {"404": _json("no such subscription or delivery", "Error")}
FULL = {"409": _json("TRACKER_NOTIFY_MAX_SUBSCRIPTIONS subscriptions exist already", "Error")}
DISABLED = {"409": _json("the subscription is disabled (the message says why)", "Error")}
SUB_ID = {"name": "sub_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


CURSOR = {"type": "integer", "minimum": 0, "maximum": 10**ID_DIGITS - 1}
_ONE_TYPE = "|".join(t.replace(".", r"\.") for t in CHANGE_TYPES)
TYPE_LIST = f"^({_ONE_TYPE})(,({_ONE_TYPE}))*$"
CHANGE_FILTERS = [
    _query("type", {"type": "string", "pattern": TYPE_LIST}, "event type(s), comma-separated"),
    _query("media_id", {"type": "string"}, "changes of one media"),
]
SUBSCRIPTION_ONE = "/subscriptions/{sub_id}"

# Beyond TRACKER_WAIT_PER_CALLER or TRACKER_WAIT_MAX held requests (tracker/notify/stream.py).
TOO_MANY_WAITING = {
    **_json(f"too many requests held open; retry after {RETRY_AFTER}s", "Error"),
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
}

PATHS: dict[str, Any] = {
    "/subscriptions": {
        "get": {
            "operationId": "listSubscriptions",
            "summary": "Every subscription (secrets are not shown)",
            "responses": {"200": _json("the subscriptions", "SubscriptionList"), **ERRORS},
        },
        "post": {
            "operationId": "createSubscription",
            "summary": "Push job changes to a URL, signed with Standard Webhooks",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("NewSubscription")}},
            },
            "responses": {
                "201": _json("created, with its secret", "Subscription"),
                **ERRORS,
                **FULL,
            },
        },
    },
    SUBSCRIPTION_ONE: {
        "get": {
            "operationId": "getSubscription",
            "parameters": [SUB_ID],
            "responses": {"200": _json("it", "Subscription"), **ERRORS, **NOT_FOUND},
        },
        "patch": {
            "operationId": "updateSubscription",
            "summary": "Change URL, event types, description; enable or disable",
            "parameters": [SUB_ID],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SubscriptionPatch")}},
            },
            "responses": {"200": _json("it", "Subscription"), **ERRORS, **NOT_FOUND},
        },
        "delete": {
            "operationId": "deleteSubscription",
            "parameters": [SUB_ID],
            "responses": {"204": {"description": "deleted"}, **ERRORS, **NOT_FOUND},
        },
    },
    f"{SUBSCRIPTION_ONE}/rotate-secret": {
        "post": {
            "operationId": "rotateSubscriptionSecret",
            "summary": "A new secret; the old one signs beside it for 24 h",
            "parameters": [SUB_ID],
            "responses": {
                "200": _json("with the new secret", "Subscription"),
                **ERRORS,
                **NOT_FOUND,
            },
        }
    },
    f"{SUBSCRIPTION_ONE}/deliveries": {
        "get": {
            "operationId": "listDeliveries",
            "summary": "Deliveries, newest first, each with its attempts",
            "parameters": [
                SUB_ID,
                _query(
                    "limit",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_DELIVERIES,
                        "default": DELIVERIES_PAGE,
                    },
                    "page size",
                ),
                _query("cursor", CURSOR, "`next_cursor` of the previous page"),
            ],
            "responses": {"200": _json("a page", "DeliveryPage"), **ERRORS, **NOT_FOUND},
        }
    },
    f"{SUBSCRIPTION_ONE}/replay": {
        "post": {
            "operationId": "replayDeliveries",
            "summary": "Queue the failed deliveries since a time once more (bounded)",
            "parameters": [SUB_ID],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("Replay")}},
            },
            "responses": {
                "202": _json("how many", "ReplayAccepted"),
                **ERRORS,
                **NOT_FOUND,
                **DISABLED,
            },
        }
    },
    "/deliveries/{delivery_id}/retry": {
        "post": {
            "operationId": "retryDelivery",
            "summary": "One more (manual) attempt of a delivery",
            "parameters": [
                {
                    "name": "delivery_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "202": _json("queued", "RetryAccepted"),
                **ERRORS,
                **NOT_FOUND,
                **DISABLED,
            },
        }
    },
    "/changes": {
        "get": {
            "operationId": "listChanges",
            "summary": "The change log after a seq, oldest first",
            "parameters": [
                _query("after", CURSOR, "the last seq seen; omitted: from the oldest kept"),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
                    "page size",
                ),
                *CHANGE_FILTERS,
            ],
            "responses": {
                "200": _json("a page", "ChangePage"),
                "410": _json("`after` is older than the changes kept; list again", "Error"),
                **ERRORS,
            },
        }
    },
    "/changes/stream": {
        "get": {
            "operationId": "streamChanges",
            "summary": "Server-Sent Events: id = seq, event = type, data = the change",
            "parameters": [
                _query("after", CURSOR, "resume after this seq (or send Last-Event-ID)"),
                *CHANGE_FILTERS,
            ],
            "responses": {
                "200": {
                    "description": "the stream, closed after a few minutes (reconnect)",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "410": _json("`after` is older than the changes kept", "Error"),
                "429": TOO_MANY_WAITING,
                **ERRORS,
            },
        }
    },
}

WAIT = _query(
    "wait",
    {"type": "string", "pattern": r"^\d{1,4}(\.\d{1,3})?(ms|s)?$"},
    f"long-poll: answer when the job changes or is final, at most "
    f"{int(MAX_WAIT.total_seconds())}s (`30s`)",
)
