"""What every command does first: read the settings, set up logging, make sure of the schema."""

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
