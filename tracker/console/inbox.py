"""`/ui/inbox` (recent callbacks, and the refused ones with why) and `/ui/scheduler` (recent runs
of each scheduled job, the reconciliation lease, the MNS consumer)."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from tracker.api import queries
from tracker.console import reads
from tracker.console.timeline import verdict
from tracker.console.web import page, reading, render
from tracker.context import context_of
from tracker.ingest.refusals import KEEP_FOR, KEPT
from tracker.notify.changes import latest_seq
from tracker.scheduler.heartbeats import scheduler_status

RECENT = 50


@page
async def inbox(request: Request) -> Response:
    context = context_of(request)
    now = context.clock()
    async with reading(request) as session:
        events = await queries.recent_events(session, limit=RECENT)
        refusals = await reads.recent_refusals(session)
        unapplied = await reads.recent_not_applied(session, now - timedelta(hours=24))
        after = await latest_seq(session)
    settings = context.settings
    return render(
        request,
        "inbox.html",
        events=events,
        refusals=refusals,
        unapplied=unapplied,
        verdict=verdict,
        kept=KEPT,
        keep_for=KEEP_FOR,
        callback_url=settings.callback_url,
        signed=not settings.callback_open,
        keys=len(settings.callback_auth_key),
        max_skew=settings.callback_max_skew,
        stream="/ui/changes",
        after=after,
        live="list",
    )


@page
async def scheduler(request: Request) -> Response:
    context = context_of(request)
    now = context.clock()
    async with reading(request) as session:
        status = await scheduler_status(session, context.settings, now)
        runs = await reads.scheduler_runs(session)
    return render(
        request,
        "scheduler.html",
        status=status,
        runs=runs,
        mns=context.mns.status() if context.mns is not None else None,
        scheduler_here=context.settings.scheduler == "on",
    )
