"""Request metrics by route template, and GET /metrics in Prometheus text format."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker import metrics
from tracker.api.auth import require_metrics_token
from tracker.api.budget import budget_today, set_budget_gauge
from tracker.api.routes import read_session
from tracker.context import context_of
from tracker.scheduler.heartbeats import SEVERITY, judge_jobs
from tracker.submit.budget import Budget

UNMATCHED = "<unmatched>"  # one label for every unknown path, so scanners cannot blow up the series


class RequestMetrics:
    """Counts requests and times them, labelled by the route template (`/jobs/{job_id}`), never
    by the raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[Any, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = self._template(scope)
            metrics.REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - start)

    def _template(self, scope: Scope) -> str:
        # The router writes the matched endpoint into the scope (also on a 405).
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        if self._templates is None:
            routes = scope["app"].routes
            self._templates = {r.endpoint: r.path for r in routes if isinstance(r, Route)}
        return self._templates.get(endpoint, UNMATCHED)


async def refresh_gauges(request: Request) -> None:
    """Jobs by type and state, stale jobs, the oldest unfinished job, the delivery backlog and
    each scheduled job's state, from the stats cache (so a scrape costs at most one aggregate
    per cache period, whatever the scrape rate)."""
    context = context_of(request)
    now = context.clock()
    stats = await context.stats.get(lambda: read_session(request), now)
    metrics.JOBS.clear()
    for job_type, states in stats.jobs.items():
        for state, count in states.items():
            metrics.JOBS.labels(job_type, state).set(count)
    metrics.STALE_JOBS.set(stats.stale)
    metrics.OLDEST_UNFINISHED_SECONDS.set(stats.oldest_unfinished_seconds(now) or 0)
    # From the database, not from this process: the relay and the scheduler may run elsewhere
    # (`tracker notifier`, `tracker scheduler`), processes with no /metrics of their own.
    subscriptions = stats.subscriptions
    metrics.DELIVERIES_PENDING.set(subscriptions.deliveries_pending)
    metrics.DELIVERIES_FAILED.set(subscriptions.deliveries_failed)
    metrics.SUBSCRIPTIONS_DISABLED.set(subscriptions.disabled)
    # Judged as of when the heartbeats were read, so a cached read never looks late.
    for job, judged in judge_jobs(stats.heartbeats, context.settings, stats.computed_at).items():
        for state in SEVERITY:
            metrics.SCHEDULER_STATE.labels(job, state).set(1 if judged["state"] == state else 0)
    async with read_session(request) as session:  # the day's budget rows, fresh
        set_budget_gauge(await budget_today(session, Budget.of(context.settings), now))


async def metrics_endpoint(request: Request) -> Response:
    require_metrics_token(request)
    await refresh_gauges(request)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]
