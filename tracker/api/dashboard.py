"""GET /: a small server-rendered dashboard (no scripts, no build step) that refreshes itself."""

from __future__ import annotations

from datetime import datetime
from html import escape

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tracker.api import queries
from tracker.api.auth import require_api_token
from tracker.api.routes import read_session
from tracker.clock import iso
from tracker.context import context_of
from tracker.errors import Unauthorized
from tracker.models import CallbackEvent, Job, JobState, Subscription

REFRESH_SECONDS = 10
STATES = [state.value for state in JobState]

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.2em}
.muted{color:#777}
"""


# The page has no script, one inline style block, and one form that searches this page: the
# browser may run nothing, load nothing, send the form nowhere else, and show the page in no
# other site's frame (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BrowserUnauthorized(Unauthorized):
    """Asks the browser for credentials: any user name, an API token as the password."""

    headers = {"WWW-Authenticate": 'Basic realm="vod-ai-tracker", charset="UTF-8"'}


def e(value: object) -> str:
    """Everything shown goes through here: ids, messages and reasons come from outside."""
    return escape("" if value is None else str(value), quote=True)


def _table(table_id: str, head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p id="{table_id}" class="muted">{e(empty)}</p>'
    header = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: object, *, numeric: bool = False, cell_id: str | None = None) -> str:
    attrs = (' class="n"' if numeric else "") + (f' id="{e(cell_id)}"' if cell_id else "")
    return f"<td{attrs}>{e(value)}</td>"


def _job_rows(jobs: list[Job]) -> list[list[str]]:
    return [
        [
            _cell(job.job_id),
            _cell(job.media_id),
            _cell(job.type),
            _cell(job.region or ""),
            _cell(job.state),
            _cell("yes" if job.stale else ""),
            _cell(iso(job.submitted_at)),
            _cell(iso(job.updated_at)),
        ]
        for job in jobs
    ]


JOB_HEAD = ["job", "media", "type", "region", "state", "stale", "submitted", "updated"]


def _event_rows(events: list[CallbackEvent]) -> list[list[str]]:
    def applied(event: CallbackEvent) -> str:
        if event.applied is None:
            return "pending"
        return "applied" if event.applied else f"not applied: {event.reason or '?'}"

    return [
        [
            _cell(iso(event.received_at)),
            _cell(event.job_id),
            _cell(event.media_id),
            _cell(event.status),
            _cell(event.deliveries, numeric=True),
            _cell(applied(event)),
        ]
        for event in events
    ]


def _counts(jobs: dict[str, dict[str, int]], by_state: dict[str, int]) -> str:
    states = STATES + sorted(set(by_state) - set(STATES))
    rows = [
        [_cell(job_type)]
        + [
            _cell(jobs[job_type].get(s, 0), numeric=True, cell_id=f"count-{job_type}-{s}")
            for s in states
        ]
        + [_cell(sum(jobs[job_type].values()), numeric=True, cell_id=f"count-{job_type}")]
        for job_type in sorted(jobs)
    ]
    rows.append(
        [_cell("all")]
        + [_cell(by_state.get(s, 0), numeric=True, cell_id=f"count-{s}") for s in states]
        + [_cell(sum(by_state.values()), numeric=True, cell_id="count-total")]
    )
    return _table("counts", ["type", *states, "total"], rows, "no jobs")


def _subscriptions(counts: queries.SubscriptionCounts, disabled: list[Subscription]) -> str:
    summary = (
        f'<p>enabled: <b id="subscriptions-enabled">{counts.enabled}</b>; disabled: '
        f'<b id="subscriptions-disabled">{counts.disabled}</b>; deliveries pending: '
        f'<span id="deliveries-pending">{counts.deliveries_pending}</span>, failed: '
        f'<span id="deliveries-failed">{counts.deliveries_failed}</span></p>'
    )
    rows = [
        [
            _cell(sub.id, numeric=True),
            _cell(sub.url),
            _cell(sub.description),
            _cell(iso(sub.disabled_at)),
            _cell(sub.disabled_reason),
        ]
        for sub in disabled
    ]
    head = ["id", "url", "description", "disabled", "reason"]
    return summary + _table("disabled-subscriptions", head, rows, "no disabled subscriptions")


def render(
    *,
    now: datetime,
    stats: queries.Stats,
    stale: list[Job],
    events: list[CallbackEvent],
    search: str | None,
    found: list[Job],
    disabled: list[Subscription],
) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        "<title>vod-ai-tracker</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>vod-ai-tracker</h1>",
        f'<p class="muted">figures as of <span id="computed-at">{e(iso(stats.computed_at))}'
        f"</span>; this page refreshes every {REFRESH_SECONDS} s</p>",
        '<form method="get" action="/" role="search">'
        '<label for="q">job or media id</label> '
        f'<input id="q" name="q" value="{e(search or "")}" size="40"> '
        '<button type="submit">search</button></form>',
    ]
    if search is not None:
        parts.append(f"<h2>Jobs matching “{e(search)}”</h2>")
        parts.append(_table("search-results", JOB_HEAD, _job_rows(found), "no job or media"))
    age = stats.oldest_unfinished_seconds(now)
    callbacks = (
        f"{stats.callbacks_received} received, {stats.callbacks_duplicate} repeated, "
        f"{stats.callbacks_rejected} rejected"
    )
    parts += [
        "<h2>Jobs by type and state</h2>",
        _counts(stats.jobs, stats.by_state()),
        f'<p>stale: <b id="stale-count">{stats.stale}</b>; oldest unfinished: '
        f'<span id="oldest-unfinished">{e(_age(age))}</span>; callbacks in the last hour: '
        f'<span id="callbacks-hour">{e(callbacks)}</span></p>',
        "<h2>Stale jobs</h2>",
        _table("stale-jobs", JOB_HEAD, _job_rows(stale), "no stale jobs"),
        "<h2>Recent callbacks</h2>",
        _table(
            "recent-callbacks",
            ["received", "job", "media", "status", "deliveries", "applied"],
            _event_rows(events),
            "no callbacks yet",
        ),
        "<h2>Subscriptions</h2>",
        _subscriptions(stats.subscriptions, disabled),
        "<h2>Scheduler</h2>",
        _table(
            "heartbeats",
            ["job", "owner", "last start", "took (s)", "ok", "summary"],
            [
                [
                    _cell(b.name),
                    _cell(b.owner),
                    _cell(iso(b.started_at)),
                    _cell(None if b.duration_s is None else f"{b.duration_s:.2f}", numeric=True),
                    _cell({True: "ok", False: "failed", None: "running"}[b.ok]),
                    _cell(b.summary),
                ]
                for b in stats.heartbeats
            ],
            "no scheduler runs yet",
        ),
        "</body></html>",
    ]
    return "".join(parts)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


async def dashboard(request: Request) -> HTMLResponse:
    try:
        require_api_token(request)
    except Unauthorized:
        raise BrowserUnauthorized("open the dashboard with an API token as the password") from None
    now = context_of(request).clock()
    stats = await context_of(request).stats.get(lambda: read_session(request), now)
    search = (request.query_params.get("q") or "").strip() or None
    found: list[Job] = []
    async with read_session(request) as session:
        stale = await queries.stale_jobs(session)
        events = await queries.recent_events(session)
        disabled = await queries.disabled_subscriptions(session)
        if search is not None:
            found = await _search(session, search)
    page = render(
        now=now,
        stats=stats,
        stale=stale,
        events=events,
        search=search,
        found=found,
        disabled=disabled,
    )
    return HTMLResponse(page, headers=SECURITY_HEADERS)


async def _search(session: AsyncSession, text: str) -> list[Job]:
    job = await queries.get_job(session, text)
    jobs = await queries.media_jobs(session, text)
    return ([job] if job is not None else []) + [j for j in jobs if job is None or j.id != job.id]


routes = [Route("/", dashboard, methods=["GET"])]
