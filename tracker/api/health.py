"""HTTP: the liveness and readiness probes (their body is `Probe`, tracker/api/schemas/)."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.api import schemas
from tracker.api.auth import require_api_token
from tracker.api.routes import consumer_json
from tracker.context import context_of
from tracker.db import head_revision
from tracker.errors import Unauthorized
from tracker.scheduler.heartbeats import scheduler_status

# VOD waits 5 s for a callback's answer (vod-reference.md 6.5): a database that takes no write
# within 4 s cannot store one in time, so the instance is not ready for VOD's traffic.
WRITE_SECONDS = 4.0


async def healthz(request: Request) -> JSONResponse:
    alive: schemas.Probe = {"status": "ok"}
    return JSONResponse(alive)


async def readyz(request: Request) -> JSONResponse:
    """Ready when a callback could be stored now: the database answers, its schema is at the
    head revision and it takes a write (not read-only, not deleted under us, not locked for
    longer than VOD waits). Who runs the scheduler, and how it fares, only with a token.
    The MNS consumer's state is shown as detail, never gating: HTTP callbacks work without it."""
    database = context_of(request).database
    mns = _mns(request)
    try:
        revision = await database.revision()
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(f"database unreachable: {type(exc).__name__}", mns)
    if revision is None or revision != head_revision():
        return _unavailable(
            f"schema at {revision}, expected {head_revision()}: run `tracker db upgrade`", mns
        )
    try:
        async with asyncio.timeout(WRITE_SECONDS):
            await database.check_writable()
    except TimeoutError:
        return _unavailable(f"database takes no write within {WRITE_SECONDS:g}s", mns)
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(f"database takes no write: {type(exc).__name__}", mns)
    body: schemas.Probe = {"status": "ready", "revision": revision}
    scheduler = await _scheduler(request)
    body["scheduler"] = scheduler if _shows_details(request) else {"status": scheduler["status"]}
    if mns is not None:
        body["mns"] = mns
    return JSONResponse(body)


def _unavailable(reason: str, mns: schemas.MnsConsumer | None) -> JSONResponse:
    body: schemas.Probe = {"status": "unavailable", "reason": reason}
    if mns is not None:
        body["mns"] = mns
    return JSONResponse(body, status_code=503)


def _mns(request: Request) -> schemas.MnsConsumer | None:
    """The MNS consumer's state (its queue and last error only with a token); never gating."""
    consumer = context_of(request).mns
    if consumer is None:
        return None
    status = consumer_json(consumer)
    return status if _shows_details(request) else {"state": status["state"]}


def _shows_details(request: Request) -> bool:
    """Host names, pids and run summaries are for the API's callers, not any prober."""
    try:
        require_api_token(request)
    except Unauthorized:
        return False
    return True


async def _scheduler(request: Request) -> schemas.SchedulerStatus:
    """The scheduled jobs' heartbeats (any replica's). Shown, not gating readiness: a stuck
    sweep must not take the webhook out of the load balancer."""
    context = context_of(request)
    try:
        async with context.database.session() as session:
            status = await scheduler_status(session, context.settings, context.clock())
    except (SQLAlchemyError, OSError) as exc:
        return {"status": "unknown", "reason": f"heartbeats unreadable: {type(exc).__name__}"}
    # scheduler_status's dict is untyped (tracker/scheduler/heartbeats.py): its keys, named.
    return {
        "status": status["status"],
        "jobs": status["jobs"],
        "reconcile_lease": status["reconcile_lease"],
        "in_process": context.scheduler is not None,
    }


routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
