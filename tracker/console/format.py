"""How the console writes times, durations and raw JSON for people."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape


def ago(moment: datetime | None, now: datetime) -> str:
    """`3 min ago`, `in 2 h`, `just now`: the relative half of a time (the exact UTC is its
    title)."""
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    text = human_duration(abs(seconds), coarse=True)
    if abs(seconds) < 5:
        return "just now"
    return f"{text} ago" if seconds > 0 else f"in {text}"


def human_duration(seconds: float | timedelta | None, *, coarse: bool = False) -> str:
    """`2 m 14 s`, `3 h 05 m`, `4 d 2 h`, `850 ms`; coarse keeps the larger unit only."""
    if seconds is None:
        return "–"
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if seconds < 0:
        return "-" + human_duration(-seconds, coarse=coarse)
    if seconds < 1 and not coarse:
        return f"{seconds * 1000:.0f} ms"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if coarse:
        for value, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")):
            if value:
                return f"{value} {unit}"
        return "0 s"
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} m"
    if minutes:
        return f"{minutes} m {secs:02d} s"
    return f"{seconds:.1f} s" if seconds < 10 else f"{secs} s"


def utc_text(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(value: Any) -> str:
    """Indented JSON for a raw-data toggle; a string that holds JSON is opened up."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def parse_iso(value: str | None) -> datetime | None:
    """A time as the JSON shapes write it (`2026-01-02T03:04:05Z`), back to a datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# The pieces every row repeats, as Python returning Markup: Jinja macro calls, and even
# Markup.format, cost ten times more, and a list page has hundreds. Every text goes through
# `escape` (markupsafe's C version); the markup around it is ours.


def time_html(moment: datetime | None, now: datetime) -> Markup:
    """A relative time with the exact UTC as its title, machine-readable in `datetime`."""
    if moment is None:
        return Markup('<span class="muted">–</span>')
    stamp = moment.astimezone(UTC)
    machine = stamp.isoformat().replace("+00:00", "Z")
    return Markup(
        f'<time datetime="{escape(machine)}" title="{escape(utc_text(stamp))}">'
        f"{escape(ago(moment, now))}</time>"
    )


def ident_html(value: str | None, href: str | None = None) -> Markup:
    """An id in monospace with a copy button (shown by the script, where a clipboard is)."""
    if value is None or value == "":
        return Markup('<span class="muted">–</span>')
    text = escape(value)
    code = f"<code>{text}</code>"
    if href:
        code = f'<a href="{escape(href)}">{code}</a>'
    return Markup(
        f'<span class="ident">{code}<button type="button" class="copy" data-copy="{text}" '
        f'aria-label="copy {text}" hidden>copy</button></span>'
    )


def state_html(state: str, stale: bool = False) -> Markup:
    name = escape(state)
    badge = f'<span class="badge s-{name}">{escape(state.replace("_", " "))}</span>'
    if stale:
        badge += ' <span class="badge s-stale">stale</span>'
    return Markup(badge)


def job_rows_html(jobs: Sequence[Any], link: Callable[[Any], str], now: datetime) -> Markup:
    """The rows of a job list (templates/_macros.html has the table around them): one call per
    page, not a dozen per row, as the list is the console's busiest page."""
    rows: list[str] = []
    for job in jobs:
        if job.job_id:
            first = ident_html(job.job_id, link(job))
        else:
            first = Markup(
                f'<a href="{escape(link(job))}">row {int(job.id)}</a> '
                '<span class="muted">(no JobId yet)</span>'
            )
        media = ident_html(job.media_id, "/ui/media/" + quote(job.media_id, safe=""))
        rows.append(
            f'<tr data-row="{int(job.id)}"><td>{first}</td><td>{media}</td>'
            f"<td>{escape(job.type)}</td><td>{escape(job.region or '–')}</td>"
            f"<td>{state_html(job.state, bool(job.stale))}</td>"
            f"<td>{time_html(job.submitted_at, now)}</td><td>{time_html(job.updated_at, now)}</td>"
            "</tr>"
        )
    return Markup("".join(rows))
