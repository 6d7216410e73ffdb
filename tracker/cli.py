"""The `tracker` command line."""

from __future__ import annotations

import asyncio
import logging

import click
from sqlalchemy.exc import SQLAlchemyError

from tracker.config import Settings, load_settings
from tracker.db import Database, head_revision, is_sqlite, upgrade
from tracker.errors import ConfigError


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group()
def main() -> None:
    """Track ApsaraVideo VOD AI jobs (smart tagging, fingerprint) from submission to result."""


@main.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the database or migrate it to the current schema."""
    settings = settings_or_exit()
    upgrade(settings.database_url)
    click.echo(f"database at revision {head_revision()}")


async def _schema_revision(settings: Settings) -> str | None:
    database = Database(settings.database_url)
    try:
        return await database.revision()
    finally:
        await database.dispose()


def ensure_schema(settings: Settings) -> None:
    """Upgrade the embedded SQLite default; refuse an out-of-date PostgreSQL schema."""
    if is_sqlite(settings.database_url):
        upgrade(settings.database_url)
        return
    try:
        revision = asyncio.run(_schema_revision(settings))
    except (OSError, SQLAlchemyError) as exc:
        raise click.ClickException(f"TRACKER_DATABASE_URL: cannot connect: {exc}") from None
    if revision != head_revision():
        raise click.ClickException(
            f"database schema is at {revision or 'nothing'}, this tracker needs {head_revision()}: "
            "run `tracker db upgrade` first"
        )


@main.command()
def serve() -> None:
    """Run the HTTP service (webhook, status API, dashboard)."""
    import uvicorn

    from tracker.app import create_app

    settings = settings_or_exit()
    try:
        settings.check_exposure()
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    setup_logging()
    ensure_schema(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


# --- tracker jobs (issue 7): the status API's queries, straight from the database ------------


@main.group()
def jobs() -> None:
    """Look up jobs in the database at TRACKER_DATABASE_URL."""


def _states(values: tuple[str, ...]) -> tuple[str, ...]:
    from tracker.models import JobState
    from tracker.queries import split_csv

    states = split_csv(values)
    known = {state.value for state in JobState}
    for state in states:
        if state not in known:
            raise click.BadParameter(f"{state!r} is not one of {', '.join(sorted(known))}")
    return states


@jobs.command("list")
@click.option("--state", "states", multiple=True, help="Repeat or comma-separate.")
@click.option("--type", "types", multiple=True, help="AIVideoTag, AIMediaDNA, ...")
@click.option("--media-id", help="Only this media's jobs.")
@click.option("--stale", is_flag=True, help="Only jobs flagged stale.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", help="`next_cursor` of the previous page (same filters).")
@click.option("--json", "as_json", is_flag=True, help="JSON as GET /jobs answers.")
def jobs_list(
    states: tuple[str, ...],
    types: tuple[str, ...],
    media_id: str | None,
    stale: bool,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Jobs, newest first."""
    from tracker import jobsview
    from tracker.queries import JobFilter, split_csv

    job_filter = JobFilter(
        states=_states(states),
        types=split_csv(types),
        media_id=media_id,
        stale=True if stale else None,
    )
    jobsview.list_jobs(settings_or_exit(), job_filter, limit, cursor, as_json=as_json)


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="JSON as GET /jobs/{job_id} answers.")
def jobs_show(job_id: str, as_json: bool) -> None:
    """One job and the callbacks received for it."""
    from tracker import jobsview

    jobsview.show_job(settings_or_exit(), job_id, as_json=as_json)
