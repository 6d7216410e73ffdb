"""`/ui/`: are jobs, callbacks and deliveries healthy over the last 24 hours?

Counts from the counters, charts from the hourly rollups (tracker/console/rollups.py), the
oldest unfinished job from one index probe per state: the page costs the same at a million jobs
as at ten.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tracker.console import rollups
from tracker.console.charts import Chart, Series, draw
from tracker.console.web import page, reading, render
from tracker.context import context_of
from tracker.notify.changes import latest_seq
from tracker.scheduler.heartbeats import scheduler_status

METRICS = ("changes", "duration", "callbacks", "deliveries")
OUTCOMES = (
    ("job.succeeded", "succeeded", "s-succeeded"),
    ("job.failed", "failed", "s-failed"),
    ("job.submit_failed", "submit failed", "s-submit_failed"),
    ("job.lost", "lost", "s-lost"),
)


def charts(data: dict[str, rollups.Hourly], hours: list[Any]) -> list[Chart]:
    changes, durations = data["changes"], data["duration"]
    callbacks, deliveries = data["callbacks"], data["deliveries"]
    types = rollups.keys_of(durations) or ["AIVideoTag", "AIMediaDNA"]
    duration_series = []
    for job_type in types:
        for label, fraction in (("p50", 0.5), ("p90", 0.9)):
            values = rollups.duration_series(durations, hours, job_type, fraction)
            css = f"t-{'tag' if job_type == 'AIVideoTag' else 'dna'}-{label}"
            duration_series.append(Series(f"{job_type} {label}", css, list(values)))
    return [
        draw(
            Chart(
                "chart-finished",
                "Jobs finished, by outcome",
                "Jobs that reached a result in each hour of the last 24 hours (UTC), stacked "
                "by outcome.",
                "jobs",
                hours,
                [
                    Series(name, css, list(map(float, rollups.series(changes, hours, key))))
                    for key, name, css in OUTCOMES
                ],
            )
        ),
        draw(
            Chart(
                "chart-duration",
                "Time from submission to result",
                "Median (p50) and 90th percentile (p90) of the time from submission to a "
                "result, per job type, for the jobs finished in each hour (UTC).",
                "time",
                hours,
                duration_series,
                kind="lines",
                format="duration",
            )
        ),
        draw(
            Chart(
                "chart-callbacks",
                "Callbacks from VOD",
                "Callbacks received (stored), repeated (VOD delivered one again) and refused "
                "(signature, timestamp, body) in each hour (UTC).",
                "callbacks",
                hours,
                [
                    Series(name, css, list(map(float, rollups.series(callbacks, hours, key))))
                    for key, name, css in (
                        ("received", "received", "s-succeeded"),
                        ("repeated", "repeated", "s-stale"),
                        ("refused", "refused", "s-failed"),
                    )
                ],
            )
        ),
        draw(
            Chart(
                "chart-deliveries",
                "Webhook deliveries",
                "Delivery attempts to subscribers answered 2xx (sent) or not (failed) in each "
                "hour (UTC).",
                "attempts",
                hours,
                [
                    Series(name, css, list(map(float, rollups.series(deliveries, hours, key))))
                    for key, name, css in (
                        ("sent", "sent", "s-succeeded"),
                        ("failed", "failed", "s-failed"),
                    )
                ],
            )
        ),
    ]


def _scheduler_line(status: dict[str, Any]) -> str:
    jobs = status.get("jobs", {})
    parts = [f"{name} {job['state']}" for name, job in sorted(jobs.items())]
    return f"{status.get('status', '?')}: " + ", ".join(parts)


def _mns_line(context: Any) -> tuple[str, str]:
    if context.mns is None:
        return "off", "not configured (events arrive as HTTP callbacks)"
    status = context.mns.status()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(status.get("messages", {}).items()))
    error = f"; last error: {status['last_error']}" if status.get("last_error") else ""
    return str(status["state"]), f"{status['state']} on queue {status['queue']}; {counts}{error}"


@page
async def overview(request: Request) -> Response:
    context = context_of(request)
    now = context.clock()
    hours = rollups.last_hours(now)
    async with reading(request) as session:
        counts = await rollups.job_counts(session)
        oldest = await rollups.oldest_unfinished(session)
        data = await rollups.hourly_metrics(session, METRICS, hours[0])
        scheduler = await scheduler_status(session, context.settings, now)
        after = await latest_seq(session)
    mns_state, mns_text = _mns_line(context)
    return render(
        request,
        "overview.html",
        counts=counts,
        types=sorted(counts.by_type()),
        oldest=oldest,
        oldest_age=None if oldest is None else now - oldest.submitted_at,
        charts=charts(data, hours),
        scheduler=scheduler,
        scheduler_line=_scheduler_line(scheduler),
        scheduler_on=context.settings.scheduler == "on",
        mns_state=mns_state,
        mns_line=mns_text,
        stream="/ui/changes",
        after=after,
        live="overview",
        window=timedelta(hours=rollups.HOURS),
    )
