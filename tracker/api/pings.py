"""HTTP: a subscription's test pings (`POST /subscriptions/{id}/test` sends one, and
`GET /subscriptions/{id}/pings` lists what they came to), with their OpenAPI paths.

Pings are listed apart from the deliveries: a delivery carries a change (seq, type, a
`webhook-id` made from the seq), a status and its retries, and pages by delivery id; a ping has
none of these, so mixing them would break both the shape and the cursor of
`/subscriptions/{id}/deliveries`."""

from __future__ import annotations

from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.api import schemas
from tracker.api.auth import require_api_token
from tracker.api.notify import ID_DIGITS
from tracker.api.notify_openapi import ERRORS, NOT_FOUND, SUB_ID, SUBSCRIPTION_ONE
from tracker.api.routes import read_session
from tracker.clock import iso
from tracker.context import context_of
from tracker.errors import BadRequest, NotFound
from tracker.models import SubscriptionPing
from tracker.notify.pings import list_pings, new_ping_id, ping_subscription
from tracker.notify.subscriptions import get_subscription


def _sub_id(request: Request) -> int:
    raw = request.path_params["sub_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > ID_DIGITS:
        raise NotFound(f"no such id {raw!r}", parameter="sub_id")
    return int(raw)


def ping_json(ping: SubscriptionPing) -> schemas.Ping:
    return {
        "id": ping.id,
        "subscription_id": ping.subscription_id,
        "webhook_id": ping.webhook_id,
        "attempted_at": iso(ping.attempted_at),
        "status_code": ping.status_code,
        "duration_ms": round(ping.duration_ms, 1),
        "error": ping.error,
        "response_body": ping.response_body,
    }


async def post_test(request: Request) -> JSONResponse:
    """202: a signed `ping` goes to the subscription's URL in the background; what it came to
    is recorded and listed by `GET .../pings` under the `webhook_id` answered here."""
    require_api_token(request)
    context = context_of(request)
    async with read_session(request) as session:
        sub = await get_subscription(session, _sub_id(request))
    msg_id = new_ping_id()
    task = BackgroundTask(
        ping_subscription, context.database, context.settings, sub, context.clock(), msg_id
    )
    body: schemas.PingAccepted = {"accepted": True, "type": "ping", "webhook_id": msg_id}
    return JSONResponse(body, status_code=202, background=task)


async def get_pings(request: Request) -> JSONResponse:
    require_api_token(request)
    for name in request.query_params:
        raise BadRequest(f"{name}: unknown parameter", parameter=name)
    async with read_session(request) as session:
        await get_subscription(session, _sub_id(request))
        pings = await list_pings(session, _sub_id(request))
        body: schemas.PingList = {"items": [ping_json(ping) for ping in pings]}
    return JSONResponse(body)


def _body(description: str, schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


routes = [
    Route("/subscriptions/{sub_id}/test", post_test, methods=["POST"]),
    Route("/subscriptions/{sub_id}/pings", get_pings, methods=["GET"]),
]

PATHS: dict[str, Any] = {
    f"{SUBSCRIPTION_ONE}/test": {
        "post": {
            "operationId": "testSubscription",
            "summary": "Send a signed `ping` in the background; its outcome is recorded",
            "parameters": [SUB_ID],
            "responses": {"202": _body("accepted", "PingAccepted"), **ERRORS, **NOT_FOUND},
        }
    },
    f"{SUBSCRIPTION_ONE}/pings": {
        "get": {
            "operationId": "listPings",
            "summary": "What the test pings came to, newest first (the last ones are kept)",
            "parameters": [SUB_ID],
            "responses": {"200": _body("the pings", "PingList"), **ERRORS, **NOT_FOUND},
        }
    },
}
