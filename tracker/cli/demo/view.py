"""What `tracker demo` shows: each job as the status API reads it, in words, as a table or lines.

A root's view: pure functions of what the demo read over HTTP; no I/O of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracker.cli.demo.scenario import FINAL, STALE_AFTER

SHORT_TYPES = {"AIVideoTag": "tag", "AIMediaDNA": "dna"}
STYLES = {"succeeded": "green", "failed": "red", "stale": "yellow", "confirming": "cyan"}


@dataclass
class Watched:
    """One job as the status API shows it, with the demo's reading of it."""

    job_id: str
    media_id: str
    type: str
    phase: str = "processing"
    note: str = "submitted; VOD is working on it"
    body: dict[str, Any] = field(default_factory=dict)  # its GET /jobs JSON
    events: list[dict[str, Any]] = field(default_factory=list)


def phase_of(job: dict[str, Any]) -> str:
    if job["state"] in FINAL:
        return str(job["state"])
    if job["stale"]:
        return "stale"
    if job.get("pending_status"):
        return "confirming"
    return str(job["state"])


def note_of(job: Watched, event: str = "callback") -> str:
    """What happened to a job, in words; `event` names how VOD's events come (callback, queue
    event)."""
    body = job.body
    if job.phase == "confirming":
        return f"{event} says {body['pending_status']}; confirming (ListAIJob)"
    if job.phase == "stale":
        return f"no word for {STALE_AFTER.total_seconds():.0f}s: flagged stale"
    if job.phase not in FINAL:
        return "VOD is working on it"
    applied = [e for e in job.events if e.get("applied")]
    if applied:
        confirmed = any(e.get("reason") == "confirmed_by_vod" for e in applied)
        how = f"{event}, confirmed by ListAIJob" if confirmed else event
    elif job.events:
        how = f"reconciliation, before the {event}"
    else:
        how = f"{event} lost: found by reconciliation"
    if body["state"] == "failed":
        how += f" ({body.get('code')})"
    if body.get("stale_at"):
        how += "; was stale"
    return how


def isatty(console: Console) -> bool:
    try:
        return bool(console.file.isatty())
    except (AttributeError, ValueError):
        return False


def one_field_a_line(body: dict[str, Any]) -> str:
    """JSON with one top-level field per line: readable, and still the API's exact answer."""
    fields = (f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in body.items())
    return "{\n" + ",\n".join(fields) + "\n}"


def jobs_table(
    watched: Iterable[Watched],
    truth: Mapping[str, str],
    delivered: Mapping[str, str],
    elapsed: str,
) -> Table:
    """The live table; `truth` is each job's status at VOD (the simulator), `delivered` when its
    outcome's webhook arrived. Fits 80 columns: no vertical borders, only the notes wrap."""
    table = Table(title=f"tracker demo  {elapsed}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("media", no_wrap=True)
    table.add_column("job", no_wrap=True)
    table.add_column("tracker", no_wrap=True)
    table.add_column("VOD", no_wrap=True)
    table.add_column("what happened")
    table.add_column("webhook", no_wrap=True)
    for job in watched:
        table.add_row(
            job.media_id,
            f"{SHORT_TYPES.get(job.type, job.type)} {job.job_id[:8]}",
            Text(job.phase, style=STYLES.get(job.phase, "")),
            truth.get(job.job_id, "?"),
            job.note,
            delivered.get(job.job_id, ""),
        )
    return table
