"""`tracker jobs`: the status API's queries and JSON, printed as rich tables or JSON.

A root over statements: each command reads through `tracker.api.queries` in one session (the
runner's `read`) and commits nothing.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.api import queries
from tracker.api.queries import JobFilter, split_csv
from tracker.api.routes import event_json
from tracker.cli.runner import print_json, read
from tracker.cli.startup import settings_or_exit
from tracker.config import Settings
from tracker.models import JobState
from tracker.shapes import job_json

STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "submit_failed": "red",
    "lost": "magenta",
    "submit_unknown": "yellow",
}


def print_jobs(
    settings: Settings, job_filter: JobFilter, limit: int, cursor: str | None, *, as_json: bool
) -> None:
    page = read(settings, lambda s: queries.list_jobs(s, job_filter, limit=limit, cursor=cursor))
    items = [job_json(job) for job in page.items]
    if as_json:
        print_json({"items": items, "next_cursor": page.next_cursor})
        return
    table = Table("job", "media", "type", "region", "state", "stale", "submitted", "updated")
    for item in items:
        state = item["state"]
        table.add_row(
            Text(item["job_id"] or "-"),
            Text(item["media_id"]),
            Text(item["type"]),
            Text(item["region"] or "-"),
            Text(state, style=STATE_STYLE.get(state, "cyan")),
            "stale" if item["stale"] else "",
            item["submitted_at"],
            item["updated_at"],
        )
    console = Console()
    console.print(table if items else "no jobs match")
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", markup=False, highlight=False)


def print_job(settings: Settings, job_id: str, *, as_json: bool) -> None:
    async def load(session: AsyncSession) -> tuple[Any, list[Any]]:
        return await queries.get_job(session, job_id), await queries.job_events(session, job_id)

    job, events = read(settings, load)
    if job is None:
        raise click.ClickException(f"no job with id {job_id!r}")
    body = job_json(job)
    if as_json:
        print_json(body)
        return
    details = Table(show_header=False)
    for key, value in body.items():
        shown = json.dumps(value, ensure_ascii=False) if key == "result" else value
        details.add_row(key, Text("" if shown is None else str(shown)))
    callbacks = Table("received", "status", "deliveries", "applied", "reason", title="callbacks")
    for event in map(event_json, events):
        applied = {True: "yes", False: "no", None: "pending"}[event["applied"]]
        callbacks.add_row(
            event["received_at"],
            Text(event["status"] or ""),
            str(event["deliveries"]),
            applied,
            Text(event["reason"] or ""),
        )
    console = Console()
    console.print(details)
    console.print(callbacks if events else "no callbacks received for this job")


@click.group()
def jobs() -> None:
    """Look up jobs in the database at TRACKER_DATABASE_URL."""


def _states(values: tuple[str, ...]) -> tuple[str, ...]:
    states = split_csv(values)
    known = {state.value for state in JobState}
    for state in states:
        if state not in known:
            raise click.BadParameter(f"{state!r} is not one of {', '.join(sorted(known))}")
    return states


@jobs.command("list")
@click.option("--state", "states", multiple=True, help="Repeat or comma-separate.")
@click.option("--type", "types", multiple=True, help="AIVideoTag, AIMediaDNA, ...")
@click.option("--region", "regions", multiple=True, help="VOD region(s): cn-shanghai, ...")
@click.option("--media-id", help="Only this media's jobs.")
@click.option("--stale", is_flag=True, help="Only jobs flagged stale.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", help="`next_cursor` of the previous page (same filters).")
@click.option("--json", "as_json", is_flag=True, help="JSON as GET /jobs answers.")
def jobs_list(
    states: tuple[str, ...],
    types: tuple[str, ...],
    regions: tuple[str, ...],
    media_id: str | None,
    stale: bool,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Jobs, newest first."""
    job_filter = JobFilter(
        states=_states(states),
        types=split_csv(types),
        regions=split_csv(regions),
        media_id=media_id,
        stale=True if stale else None,
    )
    print_jobs(settings_or_exit(), job_filter, limit, cursor, as_json=as_json)


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="JSON as GET /jobs/{job_id} answers.")
def jobs_show(job_id: str, as_json: bool) -> None:
    """One job and the callbacks received for it."""
    print_job(settings_or_exit(), job_id, as_json=as_json)
