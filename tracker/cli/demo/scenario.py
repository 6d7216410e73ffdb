"""What `tracker demo` stages: the media, the faults, its timing, and the tracker's settings for it.

A root's data: constants and one settings builder; nothing here runs or touches a database.
"""

from __future__ import annotations

import secrets
import socket
from datetime import timedelta
from typing import Any

from tracker.config import Settings

TYPES = ("AIVideoTag", "AIMediaDNA")
MEDIA = ("demo-video-1", "demo-video-2", "demo-video-3", "demo-video-4")
MNS_QUEUE = "tracker-demo-events"  # `--channel mns`: VOD writes its events here
DROPPED_MEDIA = "demo-video-2"  # its AIVideoTag callback is never sent
STUCK_MEDIA = "demo-video-3"  # its AIVideoTag job runs long enough to be flagged stale
FAILED_MEDIA = "demo-video-4"  # its AIMediaDNA job fails at VOD

# Demo-sized timing: jobs take 3 s; a job is stale after 6 s; the stuck one finishes after 12 s.
JOB_SECONDS = 3.0
STUCK_EXTRA = 9.0
STALE_AFTER = timedelta(seconds=6)
DEMO_BUDGET = {"AIVideoTag": 600.0, "AIMediaDNA": 1200.0}  # minutes a UTC day (README: Spend)
EVERY = timedelta(seconds=1)  # sweep, reconciliation and callback confirmation
GRACE = timedelta(seconds=4)  # reconciliation also asks about jobs this old that never heard back
SUBMIT_GAP = 0.5  # seconds between media, so the jobs finish one after another
POLL = 0.4  # seconds between status API reads
TRUTH = {"success": "succeeded", "fail": "failed"}
FINAL = ("succeeded", "failed", "lost", "submit_failed")

CREDENTIAL_FIELDS = (
    "access_key_id",
    "access_key_secret",
    "security_token",
    "role_arn",
    "oidc_provider_arn",
    "oidc_token_file",
    "credentials_file",
    "profile",
    "ecs_metadata",
    "credentials_uri",
)


def free_socket() -> socket.socket:
    """A loopback socket on a port the OS picks, handed to uvicorn (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def auth_key() -> str:
    # VOD's AuthKey: at most 32 characters mixing upper case, lower case and digits (6.1).
    return "Demo" + secrets.token_hex(12) + "7K"


def demo_settings(
    database_url: str,
    port: int,
    vod_url: str,
    keys: dict[str, str],
    webhook_url: str | None = None,
    *,
    credentials_uri: str | None = None,
    mns_endpoint: str | None = None,
) -> Settings:
    """The tracker's settings, all given here so the user's TRACKER_* variables cannot change
    what the demo shows. With `credentials_uri` it signs with the STS credentials found there
    instead of the key pair; with `mns_endpoint`, it consumes the simulated queue MNS_QUEUE."""
    # Every credential source named, so that none of the user's ALIBABA_CLOUD_* variables can
    # send the demo's requests to the cloud (tracker/vod/credentials.py takes the first one set).
    sources: dict[str, Any] = dict.fromkeys(CREDENTIAL_FIELDS)
    if credentials_uri is None:
        sources |= {
            "access_key_id": keys["access_key_id"],
            "access_key_secret": keys["access_key_secret"],
        }
    else:
        sources["credentials_uri"] = credentials_uri
    return Settings(
        **sources,
        database_url=database_url,
        host="127.0.0.1",
        port=port,
        vod_endpoint=vod_url,
        vod_region="cn-shanghai",
        callback_url=f"http://127.0.0.1:{port}/callbacks/vod",
        callback_auth_key=[keys["auth_key"]],
        callback_auth="on",
        callback_confirm="on",  # the default with VOD credentials: ListAIJob confirms callbacks
        api_tokens=[keys["api_token"]],
        api_auth="on",
        stale_after=STALE_AFTER,
        stale_after_aivideotag=None,
        stale_after_aimediadna=None,
        sweep_interval=EVERY,
        reconcile_interval=EVERY,
        reconcile_grace=GRACE,
        confirm_interval=EVERY,
        scheduler="on",
        # Job changes are pushed to the demo's own receiver, on loopback.
        notify="on",
        notify_url=webhook_url,
        notify_secret=keys["webhook_secret"] if webhook_url else None,
        notify_allow_private="on",
        mns_endpoint=mns_endpoint,
        mns_queue=MNS_QUEUE if mns_endpoint else None,
        # A daily budget the demo's few media stay well within, shown in its summary.
        daily_minutes=DEMO_BUDGET,
        price_per_minute={},
        currency=None,
        mns_wait=20,
    )
