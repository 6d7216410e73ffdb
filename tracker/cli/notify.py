"""`tracker subscriptions`, `tracker changes tail` and `tracker notifier`: notifications from the
command line, on the database directly (like `tracker jobs`).

A root: each command is a small flow over `tracker.notify`'s statements, run by the runner: it
owns its transaction (one per change) and prints the result; `notifier` runs the relay's flow.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import click

from tracker.api.schemas import Delivery, Subscription
from tracker.api.subscriptions import list_deliveries, subscription_json
from tracker.cli.runner import print_json, run_on_database
from tracker.cli.startup import ensure_schema, settings_or_exit, setup_logging
from tracker.db import Database
from tracker.errors import ConfigError
from tracker.notify.changes import (
    ChangeFilter,
    change_json,
    latest_seq,
    list_changes,
)
from tracker.notify.deliveries import replay_failed
from tracker.notify.egress import check_url
from tracker.notify.relay import check_notify_settings, run_notifier
from tracker.notify.subscriptions import (
    create_subscription,
    delete_subscription,
    list_subscriptions,
    parse_input,
)
from tracker.shapes import CHANGE_TYPES

TAIL_POLL = 0.5


@click.group("subscriptions")
def subscriptions() -> None:
    """Webhook subscriptions: where job changes are pushed (Standard Webhooks)."""


@subscriptions.command("add")
@click.argument("url")
@click.option(
    "--events",
    "event_types",
    help=f"comma-separated event types (default: all of {', '.join(CHANGE_TYPES)})",
)
@click.option("--description", help="a note for people")
def add(url: str, event_types: str | None, description: str | None) -> None:
    """Subscribe URL; prints the subscription with its secret (shown this once)."""
    settings = settings_or_exit()
    body: dict[str, Any] = {"url": url}
    if event_types:
        body["event_types"] = [t.strip() for t in event_types.split(",") if t.strip()]
    if description:
        body["description"] = description

    async def work(database: Database) -> Subscription:
        data = parse_input(body, partial=False)
        await check_url(data.url, allow_private=settings.notifies_private)
        async with database.write() as session:
            limit = settings.notify_max_subscriptions
            sub = await create_subscription(session, data, datetime.now(UTC), limit=limit)
            return subscription_json(sub, with_secret=True)

    print_json(run_on_database(settings, work))


@subscriptions.command("list")
def list_command() -> None:
    """Every subscription, as JSON (secrets are not shown)."""

    async def work(database: Database) -> list[Subscription]:
        async with database.session() as session:
            return [subscription_json(sub) for sub in await list_subscriptions(session)]

    print_json(run_on_database(settings_or_exit(), work))


@subscriptions.command("remove")
@click.argument("sub_id", type=int)
def remove(sub_id: int) -> None:
    """Delete a subscription and its deliveries."""

    async def work(database: Database) -> None:
        async with database.write() as session:
            await delete_subscription(session, sub_id)

    run_on_database(settings_or_exit(), work)
    click.echo(f"removed subscription {sub_id}")


@subscriptions.command("deliveries")
@click.argument("sub_id", type=int)
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
def deliveries(sub_id: int, limit: int) -> None:
    """A subscription's latest deliveries with their attempts, as JSON."""

    async def work(database: Database) -> list[Delivery]:
        async with database.session() as session:
            items, _ = await list_deliveries(session, sub_id, limit=limit)
            return items

    print_json(run_on_database(settings_or_exit(), work))


@subscriptions.command("replay")
@click.argument("sub_id", type=int)
@click.option(
    "--since",
    required=True,
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    help="failed deliveries created since then (UTC unless an offset is given)",
)
def replay(sub_id: int, since: datetime) -> None:
    """Queue a subscription's failed deliveries since a time once more."""
    moment = since if since.tzinfo else since.replace(tzinfo=UTC)

    async def work(database: Database) -> int:
        async with database.write() as session:
            return await replay_failed(session, sub_id, moment, datetime.now(UTC))

    click.echo(f"queued {run_on_database(settings_or_exit(), work)} failed deliveries again")


@click.group("changes")
def changes() -> None:
    """The job change log."""


@changes.command("tail")
@click.option("--after", type=int, help="start after this seq (default: from now on)")
@click.option("--type", "types", help="comma-separated event types")
@click.option("--once", is_flag=True, help="print what is there and stop")
def tail(after: int | None, types: str | None, once: bool) -> None:
    """Follow the change log, one JSON change a line (Ctrl-C stops)."""
    where = ChangeFilter(types=tuple(t for t in (types or "").split(",") if t))

    async def work(database: Database) -> None:
        async with database.session() as session:
            cursor = after if after is not None else await latest_seq(session)
        while True:
            async with database.session() as session:
                found = await list_changes(session, cursor, 1000, where)
            for change in found:
                print_json(change_json(change), indent=None)
                cursor = int(change.seq or cursor)
            if once and len(found) < 1000:
                return
            if len(found) < 1000:
                await asyncio.sleep(TAIL_POLL)

    with contextlib.suppress(KeyboardInterrupt):
        run_on_database(settings_or_exit(), work)


@click.command("notifier")
def notifier() -> None:
    """Run the notification relay on its own (without the HTTP service), like `scheduler`."""
    settings = settings_or_exit()
    try:
        check_notify_settings(settings)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    setup_logging(settings)
    ensure_schema(settings)
    asyncio.run(run_notifier(settings))
