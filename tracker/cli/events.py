"""`tracker events`: the stored VOD callbacks (the inbox).

A root: runs the ingest wing's replay flow (which owns its transactions) through the runner.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from tracker.cli.runner import run_on_database
from tracker.cli.startup import ensure_schema, settings_or_exit, setup_logging
from tracker.db import Database


@click.group()
def events() -> None:
    """Stored VOD callbacks (the inbox)."""


@events.command("replay")
@click.option(
    "--since",
    default=None,
    help="Only callbacks received since then: a duration back from now (90m, 7d) or a time "
    "(2026-01-02T03:04:05Z)",
)
def events_replay(since: str | None) -> None:
    """Re-apply stored callbacks that were not applied, through the webhook's applier."""
    from tracker.clock import utcnow
    from tracker.ingest.replay import replay_events

    settings = settings_or_exit()
    setup_logging(settings)
    ensure_schema(settings)
    start = parse_since(since, utcnow()) if since else None

    async def replay(database: Database) -> dict[str, int]:
        tally = await replay_events(
            database, utcnow, since=start, confirm=settings.confirms_callbacks
        )
        return dict(tally)

    tally = run_on_database(settings, replay)
    total = sum(tally.values())
    parts = ", ".join(f"{count} {what}" for what, count in sorted(tally.items()))
    click.echo(f"replayed {total} callbacks" + (f": {parts}" if parts else ""))


def parse_since(value: str, now: datetime) -> datetime:
    """`--since`: a duration back from `now` (`90m`, `7d`) or an ISO 8601 time (UTC if no zone)."""
    from tracker.config import parse_duration

    duration = parse_duration(value)
    if isinstance(duration, timedelta):
        return now - duration
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (90m, 7d) nor a time", param_hint="--since"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
