"""`tracker mns`: the MNS queue VOD writes its events to, and the consumer reading it.

A root: asks the MNS client and a running tracker's /readyz over HTTP; no database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from tracker.cli.startup import settings_or_exit
from tracker.config import Settings
from tracker.vod import SOURCES_HINT


@click.group("mns")
def mns_group() -> None:
    """VOD's events from an MNS queue (TRACKER_MNS_ENDPOINT, TRACKER_MNS_QUEUE)."""


def _tracker_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.port}"


async def _look(
    settings: Settings, endpoint: str, queue_name: str, tracker_url: str
) -> tuple[Any, dict[str, Any] | str]:
    """The queue's attributes (or the error), and the consumer's status (or why there is none)."""
    import aiohttp

    from tracker.mns.client import MnsClient, MnsError
    from tracker.vod import credentials_from_settings

    credentials = credentials_from_settings(settings)
    assert credentials is not None  # checked by the command
    queue: Any
    async with MnsClient(endpoint, credentials) as mns:
        try:
            queue = await mns.attributes(queue_name)
        except MnsError as exc:
            queue = exc
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        # The consumer's detail is for the API's callers: present a token when there is one.
        tokens = settings.api_tokens
        auth = {"Authorization": f"Bearer {tokens[0].get_secret_value()}"} if tokens else {}
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=auth) as http,
            http.get(f"{tracker_url}/readyz") as response,
        ):
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return queue, f"no tracker answering at {tracker_url} ({type(exc).__name__})"
    consumer = body.get("mns") if isinstance(body, dict) else None
    if not isinstance(consumer, dict):
        return queue, f"the tracker at {tracker_url} runs no MNS consumer"
    return queue, consumer


@mns_group.command("status")
@click.option(
    "--tracker-url",
    default=None,
    help="A running tracker whose consumer to show [default: http://TRACKER_HOST:TRACKER_PORT]",
)
def mns_status(tracker_url: str | None) -> None:
    """The queue's depth and the consumer's state (exit 1 unless both are fine)."""
    from tracker.mns.client import MnsError

    settings = settings_or_exit()
    endpoint, queue_name = settings.mns_endpoint, settings.mns_queue
    if not (endpoint and queue_name):
        raise click.ClickException("TRACKER_MNS_ENDPOINT and TRACKER_MNS_QUEUE must be set")
    if not settings.has_vod_credentials:
        raise click.ClickException(
            f"no VOD credentials, which MNS is called with: set {SOURCES_HINT}"
        )
    url = (tracker_url or _tracker_url(settings)).rstrip("/")
    queue, consumer = asyncio.run(_look(settings, endpoint, queue_name, url))
    healthy = True
    click.echo(f"queue {queue_name} at {endpoint}:")
    if isinstance(queue, MnsError):
        click.echo(f"  unreadable: {queue}")
        healthy = False
    else:
        click.echo(
            f"  {queue.active} waiting, {queue.inactive} received and not yet deleted, "
            f"{queue.delayed} delayed (visibility timeout {queue.visibility_timeout}s)"
        )
    click.echo(f"consumer ({url}):")
    if isinstance(consumer, str):
        click.echo(f"  {consumer}")
        healthy = False
    else:
        click.echo(f"  {consumer['state']} since {consumer['since']}")
        if consumer.get("last_error"):
            click.echo(f"  last error: {consumer['last_error']}")
        counts = ", ".join(f"{n} {what}" for what, n in sorted(consumer["messages"].items()))
        click.echo(f"  messages: {counts or 'none yet'}")
        healthy = healthy and consumer["state"] == "running"
    if not healthy:
        raise SystemExit(1)
