"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.context import context_of
from tracker.db import head_revision
from tracker.scheduler.heartbeats import scheduler_status


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and its schema is at the head revision. The scheduler's
    heartbeats and the MNS consumer's state are shown as detail."""
    mns = context_of(request).mns  # shown, never gating: HTTP callbacks work without it
    detail = {"mns": mns.status()} if mns is not None else {}
    try:
        revision = await context_of(request).database.revision()
    except (SQLAlchemyError, OSError) as exc:
        reason = f"database unreachable: {type(exc).__name__}"
        down = {"status": "unavailable", "reason": reason, **detail}
        return JSONResponse(down, status_code=503)
    if revision != head_revision():
        reason = f"schema at {revision}, expected {head_revision()}: run `tracker db upgrade`"
        return JSONResponse({"status": "unavailable", "reason": reason, **detail}, status_code=503)
    body: dict[str, Any] = {"status": "ready", "revision": revision}
    body["scheduler"] = await _scheduler(request)
    return JSONResponse({**body, **detail})


async def _scheduler(request: Request) -> dict[str, Any]:
    """The scheduled jobs' heartbeats (any replica's). Shown, not gating readiness: a stuck
    sweep must not take the webhook out of the load balancer."""
    context = context_of(request)
    try:
        async with context.database.session() as session:
            status = await scheduler_status(session, context.settings, context.clock())
    except (SQLAlchemyError, OSError) as exc:
        return {"status": "unknown", "reason": f"heartbeats unreadable: {type(exc).__name__}"}
    status["in_process"] = context.scheduler is not None
    return status


routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
