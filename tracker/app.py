"""The Starlette application: routes, error mapping and the resources its lifespan owns."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tracker import console
from tracker.api import health, notify, openapi, pings, routes, telemetry
from tracker.api.bodies import BodyDeadline
from tracker.api.guards import SameOriginWrites
from tracker.api.queries import StatsCache
from tracker.clock import Clock, utcnow
from tracker.config import Settings
from tracker.context import AppContext
from tracker.db import Database
from tracker.errors import TrackerError
from tracker.ingest import receiver
from tracker.ingest.inbox import Inbox
from tracker.ingest.queue import consumer_for
from tracker.ingest.refusals import RefusalLog
from tracker.notify.relay import Relay
from tracker.scheduler.service import Scheduler
from tracker.vod import SOURCES_HINT, vod_clients

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock = utcnow) -> Starlette:
    """Build the app; the database and background workers live as long as its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        vod = vod_clients(settings)
        if vod is None and settings.scheduler == "off":  # else the scheduler says it
            log.warning("no VOD credentials: POST /jobs answers 503; set %s", SOURCES_HINT)
        inbox = Inbox(database, clock=clock, confirm=settings.confirms_callbacks)
        await inbox.start()
        # MNS is called with VOD's credentials, rotating ones included.
        mns = consumer_for(settings, inbox, clock, vod.credentials if vod is not None else None)
        if mns is not None:
            await mns.start()
        scheduler = None
        if settings.scheduler == "on":  # off: `tracker serve --no-scheduler`
            scheduler = Scheduler(settings, database, vod=vod, clock=clock)
            await scheduler.start()
        relay = None
        if settings.notify == "on":  # off: TRACKER_NOTIFY=off, or `tracker notifier` elsewhere
            relay = Relay(settings, database, clock=clock, busy=inbox.busy)
            await relay.start()
        app.state.context = AppContext(
            settings,
            clock,
            database,
            inbox,
            StatsCache(),
            RefusalLog(database),
            vod=vod,
            scheduler=scheduler,
            mns=mns,
            relay=relay,
        )
        try:
            yield
        finally:
            if relay is not None:
                await relay.stop()
            if scheduler is not None:
                await scheduler.stop()
            if mns is not None:  # before the inbox: its last batch may still be committing
                await mns.stop()
            await inbox.stop()
            if vod is not None:
                await vod.close()
            await database.dispose()

    app = Starlette(
        routes=[
            *health.routes,
            *receiver.routes,
            *routes.routes,
            *notify.routes,
            *pings.routes,
            *openapi.routes,
            *telemetry.routes,
            *console.routes(settings),
        ],
        middleware=[
            Middleware(BodyDeadline),
            Middleware(receiver.CallbackReceiver),  # signed by VOD; the guard below is for browsers
            Middleware(SameOriginWrites),
            Middleware(telemetry.RequestMetrics),
        ],
        lifespan=lifespan,
        exception_handlers={
            TrackerError: _tracker_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    return app


async def _tracker_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TrackerError)
    return JSONResponse(exc.to_json(), status_code=exc.status_code, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": code, "message": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": "internal_error", "message": "internal error; see the server log"},
        status_code=500,
    )
