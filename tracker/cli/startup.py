"""What every command does first: read the settings, set up logging, make sure of the schema.

A root's machinery: each check ends the command with one line instead of a traceback.
"""

from __future__ import annotations

import asyncio

import click
from sqlalchemy.exc import SQLAlchemyError

from tracker.config import Settings, load_settings
from tracker.db import Database, head_revision, is_sqlite, sqlite_file, upgrade
from tracker.errors import ConfigError, describe
from tracker.logs import configure_logging

DATABASE_URL = "TRACKER_DATABASE_URL"


def settings_or_exit() -> Settings:
    """The settings, or one line naming the variable that is wrong (no traceback)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    check_sqlite_location(settings.database_url)
    return settings


def check_sqlite_location(url: str) -> None:
    """A SQLite file must be a file (or not exist yet) in a directory that exists."""
    path = sqlite_file(url) if is_sqlite(url) else None
    if path is None:
        return
    if path.is_dir():
        raise click.ClickException(f"{DATABASE_URL}: {path} is a directory, not a database file")
    if not path.parent.is_dir():
        raise click.ClickException(f"{DATABASE_URL}: the directory {path.parent} does not exist")


def upgrade_or_exit(url: str) -> None:
    """Create or migrate the database; a database that cannot be opened is one line."""
    try:
        upgrade(url)
    except (SQLAlchemyError, OSError) as exc:
        message = f"{DATABASE_URL}: cannot open or migrate: {describe(exc)}"
        raise click.ClickException(message) from None


def setup_logging(settings: Settings | None = None) -> None:
    """Log lines on stderr, as TRACKER_LOG_FORMAT says (text for commands without settings)."""
    configure_logging(settings.log_format if settings else "text")


async def _schema_revision(settings: Settings) -> str | None:
    database = Database(settings.database_url)
    try:
        return await database.revision()
    finally:
        await database.dispose()


def ensure_schema(settings: Settings) -> None:
    """Upgrade the embedded SQLite default; refuse an out-of-date PostgreSQL schema."""
    if is_sqlite(settings.database_url):
        upgrade_or_exit(settings.database_url)
        return
    try:
        revision = asyncio.run(_schema_revision(settings))
    except (OSError, SQLAlchemyError) as exc:
        raise click.ClickException(f"{DATABASE_URL}: cannot connect: {describe(exc)}") from None
    if revision != head_revision():
        raise click.ClickException(
            f"database schema is at {revision or 'nothing'}, this tracker needs {head_revision()}: "
            "run `tracker db upgrade` first"
        )
