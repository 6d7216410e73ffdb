"""HTTP: the OpenAPI 3.1 document of the API, served at /openapi.json and checked by schemathesis.
Paths, parameters and answers here; every body's schema is generated from tracker/api/schemas/."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.api import notify_openapi, pings
from tracker.api.bodies import BODY_LIMIT, BODY_SECONDS, MAX_DEPTH
from tracker.api.queries import CURSOR_LIMIT
from tracker.api.schemas import PAGE, components
from tracker.ingest.receiver import MAX_BODY
from tracker.models import JobState
from tracker.vod import PARAMETER_LIMIT

STATES = [state.value for state in JobState]
# One state or a comma-separated list of them.
STATE_LIST = f"^({'|'.join(STATES)})(,({'|'.join(STATES)}))*$"


SCHEMAS: dict[str, Any] = components()


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
    _query("region", {"type": "string"}, "VOD region(s), comma-separated (`cn-shanghai`)"),
    _query("media_id", {"type": "string"}, "jobs of one media"),
    _query("stale", {"type": "boolean"}, "only stale (`true`) or only not stale (`false`)"),
    _query("submitted_after", {"type": "string", "format": "date-time"}, "exclusive bound"),
    _query("submitted_before", {"type": "string", "format": "date-time"}, "exclusive bound"),
    _query("limit", {"type": "integer", **PAGE}, "page size"),
    _query(
        "cursor",
        {"type": "string", "maxLength": CURSOR_LIMIT},
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
            "operationId": "console",
            "summary": "Redirects (307) to the console for people at `/ui/` (HTML), which has its "
            "own sign-in: a form taking an API token",
            "security": [{}],
            "responses": {
                "200": {
                    "description": "the console, after the redirect",
                    "content": {"text/html": {"schema": {}}},
                },
                "307": {"description": "to `/ui/`"},
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
            "summary": "A callback can be stored now: the database answers, is at the current "
            "schema and takes a write; scheduler details only with a token",
            "security": [],
            "responses": {
                "200": _json("ready", "Probe"),
                "503": _json("not ready; `reason` says why", "Probe"),
            },
        }
    },
}


# --- POST /jobs (tracker/api/routes.py, tracker/submit/service.py) ---------------------------

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
        "200": _json(
            "nothing new: every type already had a live or finished job; or, with "
            '`"dry_run": true`, what it would submit and spend (nothing reserved or sent)',
            "SubmittedOrDryRun",
        ),
        "400": _json(
            "invalid input (also NaN, Infinity, JSON nested deeper than "
            f"{MAX_DEPTH} levels, Config or UserData over {PARAMETER_LIMIT} bytes); unknown "
            "types list `valid_types`; nothing submitted",
            "Error",
        ),
        "401": ERROR_401,
        "403": _json("sent by a page of another origin (Origin, Sec-Fetch-Site)", "Error"),
        "408": _json(f"the body did not arrive within {BODY_SECONDS:g} s", "Error"),
        "413": _json(f"the body is over {BODY_LIMIT} bytes", "Error"),
        "415": _json("the body is not sent as application/json", "Error"),
        "404": _json(
            "VOD does not know the media (`media_not_found`); nothing claimed or submitted", "Error"
        ),
        "409": _json(
            "VOD has no duration for the media yet and a type has a daily budget "
            "(`duration_unknown`); nothing claimed or submitted",
            "Error",
        ),
        "429": {
            "description": "`budget_exceeded`: a type's daily budget (TRACKER_DAILY_MINUTES) has "
            "not enough minutes left, nothing reserved or submitted, `Retry-After` is the seconds "
            "to the next UTC midnight; or VOD still throttling after retries, nothing submitted",
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            "content": {"application/json": {"schema": _ref("BudgetOrThrottled")}},
        },
        "502": _json(
            "VOD refused, or was not reached: jobs are submit_failed; or VOD's success named no "
            "JobId for a type (`vod_answer_unclear`): those jobs are submit_unknown",
            "SubmitError",
        ),
        "503": _json("VOD credentials are not configured", "Error"),
        "504": _json(
            "VOD's answer never came: jobs are submit_unknown, not resubmitted", "SubmitError"
        ),
    },
}

# --- POST /callbacks/vod (tracker/ingest/receiver.py) -----------------------------------------

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
            "400": _json(
                "malformed JSON or a tracked AI event without its fields or with ids not of "
                "VOD's shape (kept)",
                "Error",
            ),
            "401": _json("missing, wrong or expired signature (not stored)", "Error"),
            "413": _json(f"body over {MAX_BODY // 1024} KiB", "Error"),
            "503": _json("the event could not be stored; VOD retries", "Error"),
        },
    }
}


PATHS.update(notify_openapi.PATHS)
PATHS.update(pings.PATHS)
PATHS["/jobs/{job_id}"]["get"]["parameters"].append(notify_openapi.WAIT)
PATHS["/jobs/{job_id}"]["get"]["responses"]["429"] = notify_openapi.TOO_MANY_WAITING
PATHS["/jobs/{job_id}"]["get"]["responses"]["400"] = _json("`wait` is not a duration", "Error")


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
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
            },
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
    }


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(document())


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
