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
