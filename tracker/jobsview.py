"""`tracker jobs`: the status API's queries and JSON, printed as rich tables or JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import queries
from tracker.api import event_json, job_json
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import TrackerError
from tracker.queries import JobFilter

T = TypeVar("T")
STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "submit_failed": "red",
    "lost": "magenta",
    "submit_unknown": "yellow",
}


def _read(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        database = Database(settings.database_url)
        try:
            async with database.session() as session:
                return await work(session)
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except TrackerError as exc:
        raise click.ClickException(exc.message) from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def list_jobs(
    settings: Settings, job_filter: JobFilter, limit: int, cursor: str | None, *, as_json: bool
) -> None:
    page = _read(settings, lambda s: queries.list_jobs(s, job_filter, limit=limit, cursor=cursor))
    items = [job_json(job) for job in page.items]
    if as_json:
        _print_json({"items": items, "next_cursor": page.next_cursor})
        return
    table = Table("job", "media", "type", "state", "stale", "submitted", "updated")
    for item in items:
        state = item["state"]
        table.add_row(
            Text(item["job_id"] or "-"),
            Text(item["media_id"]),
            Text(item["type"]),
            Text(state, style=STATE_STYLE.get(state, "cyan")),
            "stale" if item["stale"] else "",
            item["submitted_at"],
            item["updated_at"],
        )
    console = Console()
    console.print(table if items else "no jobs match")
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", markup=False, highlight=False)


def show_job(settings: Settings, job_id: str, *, as_json: bool) -> None:
    async def load(session: AsyncSession) -> tuple[Any, list[Any]]:
        return await queries.get_job(session, job_id), await queries.job_events(session, job_id)

    job, events = _read(settings, load)
    if job is None:
        raise click.ClickException(f"no job with id {job_id!r}")
    body = job_json(job)
    if as_json:
        _print_json(body)
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
