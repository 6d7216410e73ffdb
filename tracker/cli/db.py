"""`tracker db`: the database schema.

A root: runs the Alembic migrations (tracker/db.py) and reports the revision.
"""

from __future__ import annotations

import click

from tracker.cli.startup import settings_or_exit, upgrade_or_exit
from tracker.db import head_revision


@click.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the database or migrate it to the current schema."""
    settings = settings_or_exit()
    upgrade_or_exit(settings.database_url)
    click.echo(f"database at revision {head_revision()}")
