"""`tracker vod`: VOD's own configuration, read and written with the configured key pair.

A root: calls VOD through the client (tracker/vod/); no database.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import click

from tracker.cli.startup import settings_or_exit
from tracker.config import Settings
from tracker.errors import ConfigError


@click.group("vod")
def vod_group() -> None:
    """Talk to ApsaraVideo VOD with the configured key pair."""


@vod_group.group("callback")
def vod_callback() -> None:
    """VOD's event notification: where AI completion events are sent."""


def _vod_call(settings: Settings, work: Any) -> Any:
    from tracker.vod import SOURCES_HINT, VodClient, VodError, VodOutcomeUnknown, VodUnreachable

    if not settings.has_vod_credentials:
        raise click.ClickException(f"VOD credentials are needed: set {SOURCES_HINT}")

    async def run() -> Any:
        async with VodClient(settings) as vod:
            return await work(vod)

    try:
        return asyncio.run(run())
    except (VodError, VodUnreachable, VodOutcomeUnknown) as exc:
        raise click.ClickException(str(exc)) from None


def _echo_checks(checks: list[Any], wanted_label: str) -> None:
    width = max(len(c.field) for c in checks)
    for check in checks:
        mark = "ok  " if check.ok else "DIFF"
        line = f"  {mark}  {check.field:<{width}}  {check.current or '(empty)'}"
        if not check.ok:
            line += f"  ({wanted_label} {check.wanted})"
        click.echo(line)


MNS_ENDPOINT = re.compile(r"^https?://[^/\s?#]+/?$")
MNS_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,119}$")


def mns_options(command: Any) -> Any:
    command = click.option(
        "--mns-queue",
        default=None,
        help="MNS queue VOD writes events to [default: TRACKER_MNS_QUEUE when set]",
    )(command)
    return click.option(
        "--mns-endpoint",
        default=None,
        help="Public MNS endpoint, https://<account>.mns.<region>.aliyuncs.com "
        "[default: TRACKER_MNS_ENDPOINT when set]",
    )(command)


def mns_target(
    settings: Settings, endpoint: str | None, queue: str | None
) -> tuple[str, str] | None:
    """The queue to aim VOD at: both options, or both settings, or None for HTTP."""
    if endpoint is None and queue is None:
        endpoint, queue = settings.mns_endpoint, settings.mns_queue
        if not (endpoint and queue):
            return None
    if not endpoint or not queue:
        raise click.UsageError("--mns-endpoint and --mns-queue go together")
    if not MNS_ENDPOINT.match(endpoint):
        raise click.BadParameter("an http(s):// URL with no path", param_hint="--mns-endpoint")
    if not MNS_QUEUE.match(queue):
        raise click.BadParameter(
            "letters, digits and -, starting with a letter or digit, at most 120",
            param_hint="--mns-queue",
        )
    return endpoint, queue


@vod_callback.command("show")
@click.option("--app-id", default=None, help="VOD application (default: app-1000000)")
@mns_options
def vod_callback_show(app_id: str | None, mns_endpoint: str | None, mns_queue: str | None) -> None:
    """Show VOD's callback configuration and whether it matches this tracker (exit 1 if not)."""
    from tracker.vod.callback import check_callback, check_mns_callback

    settings = settings_or_exit()
    target = mns_target(settings, mns_endpoint, mns_queue)
    current = _vod_call(settings, lambda vod: vod.get_message_callback(app_id))
    if target is not None:
        checks = check_mns_callback(current, *target)
        click.echo(
            f"VOD event notification ({current.get('AppId') or app_id or 'default app'}, "
            f"{settings.vod_url}), for the MNS queue {target[1]}:"
        )
        _echo_checks(checks, "want")
        if all(c.ok for c in checks):
            click.echo(f"AI completion events are written to the MNS queue {target[1]}.")
            return
        click.echo(
            "Does not match: run `tracker vod callback set --mns-endpoint ... --mns-queue ...`."
        )
        raise SystemExit(1)
    checks = check_callback(current, settings)
    click.echo(
        f"VOD event notification ({current.get('AppId') or app_id or 'default app'}, "
        f"{settings.vod_url}):"
    )
    _echo_checks(checks, "want")
    if all(c.ok for c in checks):
        click.echo("AI completion events reach this tracker, signed with its key.")
        return
    click.echo("Does not match this tracker: run `tracker vod callback set`.")
    raise SystemExit(1)


@vod_callback.command("set")
@click.option("--app-id", default=None, help="VOD application (default: app-1000000)")
@click.option("--yes", is_flag=True, help="Apply without asking")
@mns_options
def vod_callback_set(
    app_id: str | None, yes: bool, mns_endpoint: str | None, mns_queue: str | None
) -> None:
    """Aim VOD's AI completion events at TRACKER_CALLBACK_URL, signed with our AuthKey, or,
    with --mns-endpoint and --mns-queue (or TRACKER_MNS_*), at an MNS queue."""
    from tracker.vod.callback import changes, plan_callback, plan_mns_callback

    settings = settings_or_exit()
    target = mns_target(settings, mns_endpoint, mns_queue)
    current = _vod_call(settings, lambda vod: vod.get_message_callback(app_id))
    try:
        plan = (
            plan_callback(current, settings)
            if target is None
            else plan_mns_callback(current, *target)
        )
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    diff = changes(current, plan, settings)
    if all(c.ok for c in diff):
        click.echo("VOD's event notification already matches this tracker; nothing to change.")
        return
    click.echo("SetMessageCallback will change:")
    _echo_checks(diff, "->")
    if not yes:
        click.confirm("Apply?", abort=True)
    params = {**plan, "AppId": app_id} if app_id else plan
    _vod_call(settings, lambda vod: vod.set_message_callback(**params))
    if target is not None:
        click.echo(f"Done: VOD now writes AI completion events to the MNS queue {target[1]}")
        return
    click.echo("Done: VOD now sends AI completion events to " + plan["CallbackURL"])
