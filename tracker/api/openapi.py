"""The OpenAPI 3 document of the HTTP API, served at /openapi.json and checked by schemathesis."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.mns.consumer import STATES as MNS_STATES
from tracker.models import JobState

STATES = [state.value for state in JobState]
# One state or a comma-separated list of them.
STATE_LIST = f"^({'|'.join(STATES)})(,({'|'.join(STATES)}))*$"


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **more}


TIME = _nullable("string", format="date-time")
ANY_JSON: dict[str, Any] = {"nullable": True}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "machine-readable code"},
            "message": {"type": "string"},
            "parameter": {"type": "string", "description": "the query parameter at fault"},
        },
    },
    "Job": {
        "type": "object",
        "required": [
            "job_id",
            "media_id",
            "type",
            "state",
            "stale",
            "stale_at",
            "origin",
            "status",
            "code",
            "message",
            "result",
            "submitted_at",
            "updated_at",
            "completed_at",
        ],  # fmt: skip
        "properties": {
            "job_id": _nullable("string", description="VOD JobId; null if never submitted"),
            "media_id": {"type": "string"},
            "type": {"type": "string", "example": "AIVideoTag"},
            "state": {"type": "string", "enum": STATES},
            "stale": {"type": "boolean"},
            "stale_at": TIME,
            "origin": {"type": "string", "enum": ["submitted", "callback"]},
            "status": _nullable("string", description="VOD's status, lower case"),
            "code": _nullable("string"),
            "message": _nullable("string"),
            "result": ANY_JSON,
            "submitted_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "completed_at": TIME,
            "pending_status": {
                "type": "string",
                "description": "a callback outcome awaiting confirmation by ListAIJob",
            },
            "pending_since": TIME,
        },
    },
    "JobPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "next_cursor": _nullable("string", description="pass as `cursor` for the next page"),
        },
    },
    "JobList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}},
    },
    "Event": {
        "type": "object",
        "required": ["id", "job_id", "received_at", "deliveries", "applied", "reason"],
        "properties": {
            "id": {"type": "integer"},
            "event_type": _nullable("string"),
            "job_id": _nullable("string"),
            "media_id": _nullable("string"),
            "status": _nullable("string"),
            "event_time": TIME,
            "received_at": {"type": "string", "format": "date-time"},
            "deliveries": {"type": "integer", "minimum": 1},
            "applied": _nullable("boolean", description="null: not processed yet"),
            "applied_at": TIME,
            "reason": _nullable("string", description="why not applied"),
            "body": {"type": "string", "description": "the raw callback body"},
        },
    },
    "EventList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}},
    },
    "Stats": {
        "type": "object",
        "required": ["computed_at", "jobs", "callbacks_last_hour", "heartbeats"],
        "properties": {
            "computed_at": {"type": "string", "format": "date-time"},
            "jobs": {
                "type": "object",
                "required": ["by_type", "by_state", "total", "stale", "oldest_unfinished_age_s"],
                "properties": {
                    "by_type": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                    },
                    "by_state": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "total": {"type": "integer"},
                    "stale": {"type": "integer"},
                    "oldest_unfinished_submitted_at": TIME,
                    "oldest_unfinished_age_s": _nullable("number"),
                },
            },
            "callbacks_last_hour": {
                "type": "object",
                "required": ["received", "duplicate", "rejected"],
                "properties": {
                    "received": {"type": "integer"},
                    "duplicate": {"type": "integer"},
                    "rejected": {
                        "type": "integer",
                        "description": "refused before storage, by this process",
                    },
                },
            },
            "mns": {"$ref": "#/components/schemas/MnsConsumer"},
            "heartbeats": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "started_at"],
                    "properties": {
                        "name": {"type": "string"},
                        "owner": {"type": "string"},
                        "started_at": {"type": "string", "format": "date-time"},
                        "finished_at": TIME,
                        "duration_s": _nullable("number"),
                        "ok": _nullable("boolean"),
                        "summary": _nullable("string"),
                    },
                },
            },
        },
    },
    "Probe": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "mns": {"$ref": "#/components/schemas/MnsConsumer"},
        },
    },
    "MnsConsumer": {
        "type": "object",
        "description": "this process's MNS consumer, when TRACKER_MNS_ENDPOINT and _QUEUE are set",
        "required": ["state", "since", "queue", "endpoint", "messages"],
        "properties": {
            "state": {"type": "string", "enum": list(MNS_STATES)},
            "since": {"type": "string", "format": "date-time"},
            "queue": {"type": "string"},
            "endpoint": {"type": "string"},
            "last_error": _nullable("string"),
            "last_message_at": TIME,
            "messages": {
                "type": "object",
                "description": "counts by outcome: stored, duplicate, malformed, not_stored, "
                "deleted, expired_handles",
                "additionalProperties": {"type": "integer"},
            },
        },
    },
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


ERROR_400 = _json("a parameter is invalid (`parameter` names it)", "Error")
ERROR_401 = _json("missing or wrong bearer token", "Error")
ERROR_404 = _json("no such job", "Error")
ERROR_503 = _json("the database cannot be reached; retry later", "Error")


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


LIST_PARAMETERS = [
    _query(
        "state",
        {"type": "string", "pattern": STATE_LIST},
        "one state or several, comma-separated (`processing,submit_unknown`)",
    ),
    _query("type", {"type": "string"}, "job type(s), comma-separated (`AIVideoTag`)"),
    _query("media_id", {"type": "string"}, "jobs of one media"),
    _query("stale", {"type": "boolean"}, "only stale (`true`) or only not stale (`false`)"),
    _query("submitted_after", {"type": "string", "format": "date-time"}, "exclusive bound"),
    _query("submitted_before", {"type": "string", "format": "date-time"}, "exclusive bound"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "page size"),
    _query(
        "cursor",
        {"type": "string"},
        "`next_cursor` of the previous page; only valid with the same filters",
    ),
]

PATHS: dict[str, Any] = {
    "/jobs": {
        "get": {
            "operationId": "listJobs",
            "summary": "Jobs, newest first (submitted_at, then id), keyset-paginated",
            "parameters": LIST_PARAMETERS,
            "responses": {
                "200": _json("a page", "JobPage"),
                "400": ERROR_400,
                "401": ERROR_401,
                "503": ERROR_503,
            },
        },
    },
    "/jobs/{job_id}": {
        "get": {
            "operationId": "getJob",
            "summary": "One job by its VOD JobId",
            "parameters": [_path_param("job_id")],
            "responses": {
                "200": _json("the job", "Job"),
                "401": ERROR_401,
                "503": ERROR_503,
                "404": ERROR_404,
            },
        }
    },
    "/jobs/{job_id}/events": {
        "get": {
            "operationId": "getJobEvents",
            "summary": "Callbacks received for a job, oldest first, and whether each applied",
            "parameters": [_path_param("job_id")],
            "responses": {
                "200": _json("the callbacks", "EventList"),
                "401": ERROR_401,
                "503": ERROR_503,
                "404": ERROR_404,
            },
        }
    },
    "/media/{media_id}/jobs": {
        "get": {
            "operationId": "getMediaJobs",
            "summary": "Every job of one media, newest first",
            "parameters": [_path_param("media_id")],
            "responses": {"200": _json("the jobs", "JobList"), "401": ERROR_401, "503": ERROR_503},
        }
    },
    "/stats": {
        "get": {
            "operationId": "getStats",
            "summary": "Counts by type and state, stale jobs, callbacks, scheduler heartbeats; "
            "cached for a few seconds per process (`computed_at`)",
            "responses": {"200": _json("the figures", "Stats"), "401": ERROR_401, "503": ERROR_503},
        }
    },
    "/": {
        "get": {
            "operationId": "dashboard",
            "summary": "Dashboard for people (HTML); a browser signs in with any user name and "
            "an API token as the password",
            "security": [{"bearer": []}, {"basic": []}],
            "parameters": [_query("q", {"type": "string"}, "a job or media id to look up")],
            "responses": {
                "200": {"description": "the page", "content": {"text/html": {"schema": {}}}},
                "401": ERROR_401,
                "503": ERROR_503,
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics; open while the service listens on loopback, else "
            "TRACKER_METRICS_TOKEN or an API token",
            "security": [{}, {"bearer": []}],
            "responses": {
                "200": {"description": "text format", "content": {"text/plain": {"schema": {}}}},
                "401": ERROR_401,
                "503": ERROR_503,
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Alive",
            "security": [],
            "responses": {"200": _json("alive", "Probe")},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Database reachable and at the current schema",
            "security": [],
            "responses": {
                "200": _json("ready", "Probe"),
                "503": _json("not ready; `reason` says why", "Probe"),
            },
        }
    },
}


# --- POST /jobs (tracker/api/routes.py, tracker/submit/service.py) ---------------------------

SCHEMAS["SubmitRequest"] = {
    "type": "object",
    "required": ["media_id", "types"],
    "properties": {
        "media_id": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_.:@=+/-]{1,128}$",
            "example": "3D3D12340d92c641401fab46a0b847",
        },
        "types": {
            "oneOf": [
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "enum": ["AIVideoTag", "AIMediaDNA"]},
                },
                {
                    "type": "string",
                    "pattern": "^(AIVideoTag|AIMediaDNA)(,(AIVideoTag|AIMediaDNA))*$",
                    "example": "AIVideoTag,AIMediaDNA",
                },
            ]
        },
        "config": _nullable("object", description="SubmitAIJob `Config`"),
        "user_data": _nullable(
            "object",
            description="SubmitAIJob `UserData`; VOD echoes `Extend` (at most 512 bytes) in the "
            "callback, and `MessageCallback.CallbackURL` overrides the callback URL",
            properties={
                # 128 characters are at most 512 bytes in UTF-8; longer ASCII text is accepted.
                "Extend": {"type": "string", "maxLength": 128},
                "MessageCallback": {
                    "type": "object",
                    "required": ["CallbackURL"],
                    "properties": {"CallbackURL": {"type": "string", "pattern": "^https?://"}},
                },
            },
        ),
        "force": {"type": "boolean", "default": False, "description": "resubmit even if live"},
    },
}
SCHEMAS["SubmitError"] = {
    "type": "object",
    "required": ["error", "message", "Code", "Message", "RequestId", "jobs"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "Code": {
            "type": "string",
            "description": "VOD's error code, or ours if VOD never answered",
        },
        "Message": {"type": "string"},
        "RequestId": _nullable("string"),
        "jobs": {"type": "array", "items": _ref("Job")},
    },
}
PATHS["/jobs"]["post"] = {
    "operationId": "submitJobs",
    "summary": "Submit one media for AI jobs (SubmitAIJob); each type that already has a live or "
    "finished job is not submitted again unless `force`",
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _ref("SubmitRequest")}},
    },
    "responses": {
        "201": _json("submitted: the jobs of the requested types", "SubmittedJobs"),
        "200": _json("nothing new: every type already had a live or finished job", "SubmittedJobs"),
        "400": _json("invalid input; unknown types list `valid_types`", "Error"),
        "401": ERROR_401,
        "429": _json("VOD still throttling after retries; nothing submitted", "SubmitError"),
        "502": _json("VOD refused, or was not reached; jobs are submit_failed", "SubmitError"),
        "503": _json("VOD credentials are not configured", "Error"),
        "504": _json(
            "VOD's answer never came: jobs are submit_unknown, not resubmitted", "SubmitError"
        ),
    },
}
SCHEMAS["SubmittedJobs"] = {
    "type": "object",
    "required": ["jobs"],
    "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
}


# --- POST /callbacks/vod (tracker/ingest/receiver.py) -----------------------------------------

_TEXT = {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"}
_AI_EVENT = "^AI[^\\u0000]*Complete$"  # what tracker/ingest/receiver.py applies
_STATUS = "^([Ss][Uu][Cc][Cc][Ee][Ss][Ss]|[Ff][Aa][Ii][Ll])$"  # in any case
SCHEMAS["VodEvent"] = {
    "description": "VOD's event notification body (vod-reference.md 6.2), read as JSON whatever "
    "the Content-Type; at most 64 KiB. AI completion events are applied to their job; any other "
    "event type is stored and acknowledged, not applied.",
    "oneOf": [_ref("VodAIEvent"), _ref("VodOtherEvent")],
}
SCHEMAS["VodAIEvent"] = {
    "type": "object",
    "required": ["EventType", "JobId", "Status"],
    "properties": {
        "EventType": {**_TEXT, "maxLength": 64, "pattern": _AI_EVENT},
        "EventTime": {"description": "UTC; read leniently (`...:17Z`, `...:17:025Z`)"},
        "JobId": {**_TEXT, "maxLength": 128},
        "MediaId": {**_TEXT, "maxLength": 128, "nullable": True},
        "Status": {
            "type": "string",
            "pattern": "^([Ss][Uu][Cc][Cc][Ee][Ss][Ss]|[Ff][Aa][Ii][Ll])$",
        },
        "Code": {},
        "Message": {},
        "Data": {"description": "the result as a JSON-encoded string"},
    },
}
SCHEMAS["VodOtherEvent"] = {
    "type": "object",
    "required": ["EventType"],
    "properties": {
        "EventType": {**_TEXT, "maxLength": 64, "not": {"pattern": _AI_EVENT}},
    },
}
SCHEMAS["CallbackAck"] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["stored", "duplicate"]}},
}
PATHS["/callbacks/vod"] = {
    "post": {
        "operationId": "receiveVodCallback",
        "summary": "VOD's webhook: stored (committed) before the 200, applied to its job soon "
        "after; a repeated delivery answers 200 and changes nothing",
        "security": [],  # VOD signs with its own headers, not a bearer token
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in (
                ("X-VOD-TIMESTAMP", "Unix seconds the callback was sent"),
                ("X-VOD-SIGNATURE", "md5_hex(callback URL|timestamp|AuthKey); required with keys"),
            )
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("VodEvent")}},
        },
        "responses": {
            "200": _json("stored, or a duplicate of a stored event", "CallbackAck"),
            "400": _json("malformed JSON or an AI event without its fields (kept)", "Error"),
            "401": _json("missing, wrong or expired signature (not stored)", "Error"),
            "413": _json("body over 64 KiB", "Error"),
            "503": _json("the event could not be stored; VOD retries", "Error"),
        },
    }
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "vod-ai-tracker",
            "version": "1",
            "description": "Where is my VOD AI job? Errors are always "
            '`{"error": code, "message": text}`.',
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
    }


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(document())


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
