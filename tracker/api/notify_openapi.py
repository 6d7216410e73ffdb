"""The OpenAPI 3.1 part of the notification routes (tracker/api/notify.py), merged into
tracker/api/openapi.py's document. Limits are imported from where they are enforced."""

from __future__ import annotations

from typing import Any

from tracker.notify.changes import CHANGE_TYPES, DEFAULT_PAGE, MAX_PAGE
from tracker.notify.deliveries import MAX_PAGE as MAX_DELIVERIES
from tracker.notify.deliveries import PAGE as DELIVERIES_PAGE
from tracker.notify.egress import MAX_URL
from tracker.notify.stream import MAX_WAIT
from tracker.notify.subscriptions import DESCRIPTION_LIMIT

TIME = {"type": ["string", "null"], "format": "date-time"}
EVENT_TYPE = {"type": "string", "enum": list(CHANGE_TYPES)}


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
SUB_ID = {"name": "sub_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


SUBSCRIPTION_FIELDS: dict[str, Any] = {
    "url": {"type": "string", "maxLength": MAX_URL, "description": "http(s); public addresses"},
    "event_types": {
        "type": ["array", "null"],
        "items": EVENT_TYPE,
        "minItems": 1,
        "description": "omitted or null: every event type",
    },
    "description": {"type": ["string", "null"], "maxLength": DESCRIPTION_LIMIT},
}

SCHEMAS: dict[str, Any] = {
    "Subscription": {
        "type": "object",
        "required": ["id", "url", "event_types", "enabled", "source", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "url": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "event_types": {"type": "array", "items": EVENT_TYPE},
            "enabled": {"type": "boolean"},
            "disabled_reason": {"type": ["string", "null"]},
            "source": {"type": "string", "enum": ["api", "env"]},
            "created_at": {"type": "string", "format": "date-time"},
            "last_success_at": TIME,
            "failing_since": TIME,
            "secret": {
                "type": "string",
                "description": "`whsec_` + base64; shown on creation and rotation only",
            },
        },
    },
    "SubscriptionList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref("Subscription")}},
    },
    "NewSubscription": {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": SUBSCRIPTION_FIELDS,
    },
    "SubscriptionPatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {**SUBSCRIPTION_FIELDS, "enabled": {"type": "boolean"}},
    },
    "Attempt": {
        "type": "object",
        "required": ["attempted_at", "status_code", "duration_ms", "error", "trigger"],
        "properties": {
            "attempted_at": {"type": "string", "format": "date-time"},
            "status_code": {"type": ["integer", "null"]},
            "duration_ms": {"type": "number"},
            "error": {"type": ["string", "null"]},
            "response_body": {"type": ["string", "null"], "description": "truncated"},
            "trigger": {"type": "string", "enum": ["scheduled", "manual"]},
        },
    },
    "Delivery": {
        "type": "object",
        "required": ["id", "subscription_id", "seq", "webhook_id", "status", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "subscription_id": {"type": "integer"},
            "seq": {"type": "integer"},
            "webhook_id": {"type": "string"},
            "type": {"type": ["string", "null"]},
            "status": {
                "type": "string",
                "enum": ["pending", "sending", "succeeded", "failed", "skipped"],
            },
            "attempts": {"type": "array", "items": _ref("Attempt")},
            "next_attempt_at": TIME,
            "last_error": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "DeliveryPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("Delivery")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "Change": {
        "type": "object",
        "required": ["seq", "type", "timestamp", "data"],
        "properties": {
            "seq": {"type": "integer"},
            "type": EVENT_TYPE,
            "timestamp": {"type": "string", "format": "date-time"},
            "data": {
                "description": "the job as GET /jobs/{id} showed it, plus seq and previous_state",
                "allOf": [_ref("Job")],
            },
        },
    },
    "ChangePage": {
        "type": "object",
        "required": ["items", "next_after"],
        "properties": {
            "items": {"type": "array", "items": _ref("Change")},
            "next_after": {"type": "integer", "description": "pass as `after` for the next page"},
        },
    },
    "Accepted": {"type": "object", "additionalProperties": True},
}

CURSOR = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}  # 18 digits
_ONE_TYPE = "|".join(t.replace(".", r"\.") for t in CHANGE_TYPES)
TYPE_LIST = f"^({_ONE_TYPE})(,({_ONE_TYPE}))*$"
CHANGE_FILTERS = [
    _query("type", {"type": "string", "pattern": TYPE_LIST}, "event type(s), comma-separated"),
    _query("media_id", {"type": "string"}, "changes of one media"),
]
SUBSCRIPTION_ONE = "/subscriptions/{sub_id}"

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
            "responses": {"201": _json("created, with its secret", "Subscription"), **ERRORS},
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
    f"{SUBSCRIPTION_ONE}/test": {
        "post": {
            "operationId": "testSubscription",
            "summary": "Send a signed `ping` in the background",
            "parameters": [SUB_ID],
            "responses": {"202": _json("accepted", "Accepted"), **ERRORS, **NOT_FOUND},
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
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["since"],
                            "properties": {"since": {"type": "string", "format": "date-time"}},
                        }
                    }
                },
            },
            "responses": {"202": _json("how many", "Accepted"), **ERRORS, **NOT_FOUND},
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
            "responses": {"202": _json("queued", "Accepted"), **ERRORS, **NOT_FOUND},
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
