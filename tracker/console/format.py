"""How the console writes times, durations and raw JSON for people."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from tracker.db import too_deep


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
        if too_deep(value):  # kept as text for its depth (issue 23, P2): shown as it is
            return value
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
# Markup.format, cost ten times more, and a list page has hundreds. Every text from outside (ids,
# states, links) goes through `escape` (markupsafe's C version); the markup around it, and the
# times and durations we write from numbers (digits, letters, `-`, `:`, `.`), are ours. Each
# piece is built as a plain str and wrapped in Markup once, by whoever hands it to a template.

MISSING = '<span class="muted">–</span>'


def _time(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return MISSING
    stamp = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    machine = stamp.isoformat()
    # utc_text's form, cut from the ISO text (strftime costs more; it writes years < 1000
    # unpadded, so those go through it)
    readable = f"{machine[:10]} {machine[11:19]} UTC" if stamp.year >= 1000 else utc_text(stamp)
    return (
        f'<time datetime="{machine.replace("+00:00", "Z")}" title="{readable}">'
        f"{ago(moment, now)}</time>"
    )


def time_html(moment: datetime | None, now: datetime) -> Markup:
    """A relative time with the exact UTC as its title, machine-readable in `datetime`."""
    return Markup(_time(moment, now))


def _ident(value: str | None, href: str | None = None) -> str:
    if value is None or value == "":
        return MISSING
    text = escape(value)
    code = f"<code>{text}</code>"
    if href:
        code = f'<a href="{escape(href)}">{code}</a>'
    return (
        f'<span class="ident">{code}<button type="button" class="copy" data-copy="{text}" '
        f'aria-label="copy {text}" hidden>copy</button></span>'
    )


def ident_html(value: str | None, href: str | None = None) -> Markup:
    """An id in monospace with a copy button (shown by the script, where a clipboard is)."""
    return Markup(_ident(value, href))


_STATES: dict[tuple[str, bool], str] = {}  # a handful of states: each badge is written once


def _state(state: str, stale: bool = False) -> str:
    found = _STATES.get((state, stale))
    if found is None:
        name = escape(state)
        found = f'<span class="badge s-{name}">{escape(state.replace("_", " "))}</span>'
        if stale:
            found += ' <span class="badge s-stale">stale</span>'
        if len(_STATES) < 256:  # states come from our enum; the bound is for anything else
            _STATES[(state, stale)] = found
    return found


def state_html(state: str, stale: bool = False) -> Markup:
    return Markup(_state(state, stale))


def job_rows_html(jobs: Sequence[Any], link: Callable[[Any], str], now: datetime) -> Markup:
    """The rows of a job list (templates/_macros.html has the table around them): one call per
    page, not a dozen per row, as the list is the console's busiest page."""
    rows: list[str] = []
    for job in jobs:
        if job.job_id:
            first = _ident(job.job_id, link(job))
        else:
            first = (
                f'<a href="{escape(link(job))}">row {int(job.id)}</a> '
                '<span class="muted">(no JobId yet)</span>'
            )
        media = _ident(job.media_id, "/ui/media/" + quote(job.media_id, safe=""))
        rows.append(
            f'<tr data-row="{int(job.id)}"><td>{first}</td><td>{media}</td>'
            f"<td>{escape(job.type)}</td><td>{escape(job.region or '–')}</td>"
            f"<td>{_state(job.state, bool(job.stale))}</td>"
            f"<td>{_time(job.submitted_at, now)}</td><td>{_time(job.updated_at, now)}</td>"
            "</tr>"
        )
    return Markup("".join(rows))
