"""`tracker fake-vod` (composition root): the local VOD simulator, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Callable
from dataclasses import MISSING
from datetime import timedelta
from typing import Any

import click

from tracker.cli.startup import setup_logging
from tracker.fakevod import CannotListen, FakeVod, Faults
from tracker.fakevod.faults import Bounds, options

log = logging.getLogger(__name__)

PORT = click.IntRange(0, 65535)
MNS_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,119}$")


def fault_options(command: Callable[..., None]) -> Callable[..., None]:
    """One option per field of `Faults`: `fail_rate` is `--fail-rate`, with its default,
    bounds and help."""
    for field in reversed(options()):
        assert field.default is not MISSING
        bounds: Bounds | None = field.metadata["bounds"]
        command = click.option(
            "--" + field.name.replace("_", "-"),
            field.name,
            default=field.default,
            type=type(field.default)
            if bounds is None
            else click.FloatRange(bounds.low, bounds.high, min_open=bounds.low_open),
            show_default=field.default is not None,
            help=field.metadata["help"],
        )(command)
    return command


@click.command("fake-vod")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=PORT, help="0 for a free port")
@click.option(
    "--access-key-id",
    envvar="ALIBABA_CLOUD_ACCESS_KEY_ID",
    help="Key pair it accepts [env: ALIBABA_CLOUD_ACCESS_KEY_ID]",
)
@click.option(
    "--access-key-secret",
    envvar="ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    help="[env: ALIBABA_CLOUD_ACCESS_KEY_SECRET]",
)
@click.option(
    "--callback-url",
    multiple=True,
    envvar="TRACKER_CALLBACK_URL",
    help="Where events go; repeat to alternate between replicas [env: TRACKER_CALLBACK_URL]",
)
@click.option(
    "--auth-key",
    default=None,
    help="Sign callbacks with this AuthKey [default: first TRACKER_CALLBACK_AUTH_KEY]",
)
@fault_options
@click.option("--seed", default=None, type=int, help="Same seed, same ids and outcomes")
@click.option(
    "--sts-ttl",
    default=None,
    help="Serve GET /credentials (ALIBABA_CLOUD_CREDENTIALS_URI) handing out STS credentials "
    "that live this long, e.g. 10s or 15m, and accept each only until it expires",
)
@click.option(
    "--mns-port",
    default=None,
    type=PORT,
    help="Serve the MNS queue API (/queues/..., same key pair) on this port, 0 for a free one "
    "[default: not served; a free port with --mns-queue]",
)
@click.option(
    "--mns-queue",
    default=None,
    help="Create this queue and write completion events to it (CallbackType MNS) instead of "
    "POSTing them",
)
def fake_vod(
    host: str,
    port: int,
    access_key_id: str | None,
    access_key_secret: str | None,
    callback_url: tuple[str, ...],
    auth_key: str | None,
    seed: int | None,
    sts_ttl: str | None,
    mns_port: int | None,
    mns_queue: str | None,
    **faults: Any,
) -> None:
    """Run the local VOD simulator (signed API, AI jobs, callbacks, fault injection)."""
    from tracker.config import parse_duration

    ttl = None
    if sts_ttl is not None:
        parsed = parse_duration(sts_ttl)
        if not isinstance(parsed, timedelta) or parsed.total_seconds() < 1:
            raise click.BadParameter(
                "a duration of at least 1s, e.g. 10s or 15m", param_hint="--sts-ttl"
            )
        ttl = parsed.total_seconds()
    if not access_key_id or not access_key_secret:
        raise click.ClickException(
            "the simulator needs a key pair: set ALIBABA_CLOUD_ACCESS_KEY_ID and "
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET (or --access-key-id/--access-key-secret)"
        )
    if auth_key is None:
        auth_key = os.environ.get("TRACKER_CALLBACK_AUTH_KEY", "")
    # A rotation list signs with its first key, like `tracker vod callback set`.
    auth_key = next((k.strip() for k in auth_key.split(",") if k.strip()), None)
    if mns_queue is not None and not MNS_QUEUE_NAME.match(mns_queue):
        raise click.BadParameter(
            "letters, digits and -, starting with a letter or digit, at most 120",
            param_hint="--mns-queue",
        )
    fake = FakeVod(
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
        callback_url=callback_url[0] if callback_url else None,
        extra_callback_urls=list(callback_url[1:]),
        auth_key=auth_key,
        seed=seed,
        sts_ttl=ttl,
        mns_queue=mns_queue,
        faults=Faults(**faults),
    )
    setup_logging()
    try:
        asyncio.run(_serve(fake, host, port, mns_port, seed))
    except CannotListen as exc:
        raise click.ClickException(str(exc)) from None


async def _serve(
    fake: FakeVod, host: str, port: int, mns_port: int | None, seed: int | None
) -> None:
    # MNS only when asked: a queue API nobody uses must not take a port another simulator needs.
    url = await fake.start(host, port, mns_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(startup_line(fake, url, seed), flush=True)  # noqa: T201 - the line operators look for
    try:
        await stop.wait()
    finally:
        await fake.stop()
        log.info(
            "fake VOD stopped: %d submits, %d jobs, %d deliveries, %d events dropped",
            fake.submit_calls,
            len(fake.jobs),
            len(fake.deliveries),
            len(fake.dropped),
        )


def startup_line(fake: FakeVod, url: str, seed: int | None) -> str:
    """Where it listens, where events go and how, what goes wrong; no secret."""
    targets = ", ".join(u for u in [fake.callback_url, *fake.extra_callback_urls] if u)
    targets = targets or "nowhere until SetMessageCallback or UserData"
    signed = "signed with the AuthKey" if fake.auth_key else "unsigned"
    if fake.mns_queue:  # MNS messages carry no signature (vod-reference.md 6.7)
        targets, signed = f"MNS queue {fake.mns_queue} at {fake.mns.url}", "unsigned, as VOD's"
    parts = [
        f"fake VOD listening on {url} (AccessKeyId {fake.access_key_id})",
        f"callbacks to {targets} ({signed})",
    ]
    if fake.mns.url:
        parts.append(f"MNS queue API on {fake.mns.url}")
    parts.append(f"delay {fake.faults.delay}s")
    if shown := fake.faults.shown():
        parts.append(f"faults: {shown}")
    if seed is not None:
        parts.append(f"seed {seed}")
    if (ttl := fake.gateway.sts_ttl) is not None:
        parts.append(f"STS credentials at {fake.credentials_uri} for {ttl:g}s each")
    return "; ".join(parts)
