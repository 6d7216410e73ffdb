"""`tracker fake-vod`: the local VOD simulator."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

import click

from tracker.cli.startup import setup_logging

RATE = click.FloatRange(0.0, 1.0)
MNS_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,119}$")


@click.command("fake-vod")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=int)
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
@click.option("--delay", default=2.0, show_default=True, help="Seconds from submit to result")
@click.option(
    "--fail-rate", default=0.0, type=RATE, show_default=True, help="Share of jobs that fail"
)
@click.option(
    "--drop-rate", default=0.0, type=RATE, show_default=True, help="Share of events never sent"
)
@click.option(
    "--duplicate-rate", default=0.0, type=RATE, show_default=True, help="Share sent twice"
)
@click.option("--late-rate", default=0.0, type=RATE, show_default=True, help="Share delivered late")
@click.option("--late-seconds", default=3.0, show_default=True, help="How late")
@click.option(
    "--qps",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Answer Throttling.User above this rate",
)
@click.option(
    "--slow-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of API answers held back after the work is done",
)
@click.option("--slow-seconds", default=15.0, show_default=True, help="How long they are held")
@click.option(
    "--error-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of API calls answered InternalError (500) without doing anything",
)
@click.option(
    "--reset-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of API answers cut off midway after the work is done",
)
@click.option(
    "--lose-submit-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of SubmitAIJob calls whose jobs are created but whose answer never comes "
    "(the connection is closed)",
)
@click.option(
    "--unsolicited-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Chance per SubmitAIJob of an extra AIMediaDNAComplete nobody submitted",
)
@click.option(
    "--stuck-rate",
    default=0.0,
    type=RATE,
    show_default=True,
    help="Share of jobs that stay processing",
)
@click.option("--stuck-seconds", default=600.0, show_default=True, help="For how much longer")
@click.option("--callback-attempts", default=3, show_default=True, help="Deliveries per event")
@click.option("--callback-interval", default=1.0, show_default=True, help="Seconds between them")
@click.option("--seed", default=None, type=int, help="Same seed, same ids and outcomes")
@click.option(
    "--sts-ttl",
    default=None,
    help="Serve GET /credentials (ALIBABA_CLOUD_CREDENTIALS_URI) handing out STS credentials "
    "that live this long, e.g. 10s or 15m, and accept each only until it expires",
)
@click.option(
    "--mns-port",
    default=9001,
    show_default=True,
    type=int,
    help="Port of the MNS queue API (/queues/...), same key pair",
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
    sts_ttl: str | None,
    **faults: Any,
) -> None:
    """Run the local VOD simulator (signed API, AI jobs, callbacks, fault injection)."""
    from tracker.config import parse_duration
    from tracker.fakevod import run_fake_vod

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
    mns_queue = faults.get("mns_queue")
    if mns_queue is not None and not MNS_QUEUE_NAME.match(mns_queue):
        raise click.BadParameter(
            "letters, digits and -, starting with a letter or digit, at most 120",
            param_hint="--mns-queue",
        )
    setup_logging()
    run_fake_vod(
        host,
        port,
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
        callback_urls=list(callback_url),
        auth_key=auth_key,
        sts_ttl=ttl,
        **faults,
    )
