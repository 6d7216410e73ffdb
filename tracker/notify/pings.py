"""Test pings of a subscription: sent, then recorded as a delivery's attempt is, and listed.

`record_ping` and `list_pings` are statements (they take a session and never commit);
`ping_subscription` is a flow: it sends outside any transaction, then records the outcome in
one short write of its own. A ping is not a delivery: it has no change behind it, is never
retried, and leaves the subscription's health (last success, failing streak) alone, so a test
cannot mask a failing subscription nor disable a healthy one.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import iso
from tracker.config import Settings
from tracker.db import Database
from tracker.errors import describe
from tracker.models import Subscription, SubscriptionPing
from tracker.notify.attempts import BODY_KEPT
from tracker.notify.post import AttemptResult, send, webhook_session
from tracker.notify.subscriptions import signing_secrets

log = logging.getLogger(__name__)

PINGS_KEPT = 100  # per subscription; recording one more drops the oldest


def new_ping_id() -> str:
    """The ping's `webhook-id`: the receiver sees it and the record keeps it, to match them."""
    return f"ping_{uuid.uuid4().hex}"


def ping_body(sub_id: int, now: datetime) -> bytes:
    payload = {"type": "ping", "timestamp": iso(now), "data": {"subscription_id": sub_id}}
    return json.dumps(payload, separators=(",", ":")).encode()


async def ping_subscription(
    database: Database, settings: Settings, sub: Subscription, now: datetime, msg_id: str
) -> AttemptResult:
    """One signed `ping` to the subscription's URL, whatever its state, and its outcome recorded.

    The POST goes out before any transaction opens (it may take the whole notify timeout). A
    database that cannot record it is logged, not raised: the ping itself was sent, and the
    caller (a background task of the API, or the console, which shows the result anyway) has
    nobody else to tell."""
    secrets = signing_secrets(sub, now)
    allow = settings.notifies_private
    async with webhook_session(allow) as http:
        result = await send(
            http,
            sub.url,
            secrets,
            msg_id,
            ping_body(sub.id, now),
            now,
            time_limit=settings.notify_timeout.total_seconds(),
            allow_private=allow,
        )
    log.info("ping %s to subscription %s: %s", msg_id, sub.id, result.status_code or result.error)
    try:
        async with database.write() as session:
            await record_ping(session, sub.id, msg_id, result, now)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("ping %s to subscription %s not recorded: %s", msg_id, sub.id, describe(exc))
    return result


async def record_ping(
    session: AsyncSession, sub_id: int, msg_id: str, result: AttemptResult, at: datetime
) -> bool:
    """Append what a ping came to, keeping the newest PINGS_KEPT of its subscription; False
    (nothing written) when the subscription was deleted while the ping was under way."""
    table = cast(Table, SubscriptionPing.__table__)
    column = table.c
    body = (result.body or None) and result.body[:BODY_KEPT]
    values: list[Any] = [
        Subscription.id,
        literal(msg_id, column.webhook_id.type),
        literal(at, column.attempted_at.type),
        literal(result.status_code, column.status_code.type),
        literal(result.duration_ms, column.duration_ms.type),
        literal(result.error, column.error.type),
        literal(body, column.response_body.type),
    ]
    # INSERT ... SELECT from the subscription's row: a subscription deleted meanwhile inserts
    # nothing, where a plain INSERT would break its foreign key.
    written = await session.execute(
        table.insert().from_select(
            [
                "subscription_id",
                "webhook_id",
                "attempted_at",
                "status_code",
                "duration_ms",
                "error",
                "response_body",
            ],
            select(*values).where(Subscription.id == sub_id),
        )
    )
    if not getattr(written, "rowcount", 0):
        return False
    oldest_kept = (
        select(column.id)
        .where(column.subscription_id == sub_id)
        .order_by(column.id.desc())
        .offset(PINGS_KEPT - 1)
        .limit(1)
        .scalar_subquery()
    )
    await session.execute(
        delete(table).where(column.subscription_id == sub_id, column.id < oldest_kept)
    )
    return True


async def list_pings(
    session: AsyncSession, sub_id: int, limit: int = PINGS_KEPT
) -> Sequence[SubscriptionPing]:
    """A subscription's recorded pings, newest first (at most PINGS_KEPT are kept)."""
    query = (
        select(SubscriptionPing)
        .where(SubscriptionPing.subscription_id == sub_id)
        .order_by(SubscriptionPing.id.desc())
        .limit(min(limit, PINGS_KEPT))
    )
    return (await session.scalars(query)).all()
