"""Liveness and readiness probes."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracker.db import Database, head_revision


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and its schema is at the head revision."""
    database: Database = request.app.state.database
    try:
        revision = await database.revision()
    except (SQLAlchemyError, OSError) as exc:
        reason = f"database unreachable: {type(exc).__name__}"
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    if revision != head_revision():
        reason = f"schema at {revision}, expected {head_revision()}: run `tracker db upgrade`"
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready", "revision": revision})


routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
