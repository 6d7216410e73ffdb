"""Subscriptions: where job changes are pushed, which event types, and the signing secrets.

Statements take a session and never commit. A subscription receives the changes committed after
it was created (its fan-out cursor starts at the log's end); disabling it skips its pending
deliveries, and enabling it again starts from the log's end once more (GET /changes has the
changes in between).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.errors import BadRequest, NotFound, TrackerError
from tracker.models import Delivery, Subscription
from tracker.notify.changes import latest_seq
from tracker.notify.signing import new_secret, secret_key
from tracker.shapes import CHANGE_TYPES

ROTATION_GRACE = timedelta(hours=24)  # the old secret keeps signing this long (Svix: 24 h)
DESCRIPTION_LIMIT = 500
ENV_DESCRIPTION = "declared by TRACKER_NOTIFY_URL"
# Made through the API (or the CLI), or declared by TRACKER_NOTIFY_URL.
Source = Literal["api", "env"]
SOURCES: tuple[Source, ...] = get_args(Source)
SUBSCRIBE_LOCK = 0x7472_6B73_7562  # "trksub": creations counted against the cap take turns


class SubscriptionNotFound(NotFound):
    code = "subscription_not_found"


class InvalidSubscription(BadRequest):
    code = "invalid_subscription"


class TooManySubscriptions(TrackerError):
    """TRACKER_NOTIFY_MAX_SUBSCRIPTIONS exist already: each costs the relay a share of writes."""

    status_code = 409
    code = "too_many_subscriptions"


@dataclass(frozen=True)
class SubscriptionInput:
    """A validated body of POST or PATCH /subscriptions; None: not given."""

    url: str | None = None
    event_types: list[str] | None = None
    all_types: bool = False  # `event_types: null` in a PATCH: every type again
    description: str | None = None
    enabled: bool | None = None


def parse_event_types(value: object) -> list[str] | None:
    """A list of known event types (None or absent: all of them)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidSubscription(
            "event_types: a list of event type names", parameter="event_types"
        )
    unknown = [item for item in value if item not in CHANGE_TYPES]
    if unknown:
        raise InvalidSubscription(
            f"event_types: unknown {', '.join(unknown)}; known: {', '.join(CHANGE_TYPES)}",
            parameter="event_types",
        )
    if not value:
        raise InvalidSubscription("event_types: at least one (omit it for all)")
    return list(dict.fromkeys(value))


def parse_input(body: Mapping[str, Any], *, partial: bool) -> SubscriptionInput:
    """The fields of a subscription body; unknown fields, wrong types: 400."""
    known = {"url", "event_types", "description"} | ({"enabled"} if partial else set())
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidSubscription(f"{unknown[0]}: unknown field", parameter=unknown[0])
    if not partial and "url" not in body:
        raise InvalidSubscription("url: required", parameter="url")
    url = body.get("url")
    if "url" in body and not isinstance(url, str):
        raise InvalidSubscription("url: a string", parameter="url")
    description = body.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > DESCRIPTION_LIMIT
    ):
        raise InvalidSubscription(
            f"description: a string of at most {DESCRIPTION_LIMIT} characters",
            parameter="description",
        )
    enabled = body.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise InvalidSubscription("enabled: true or false", parameter="enabled")
    return SubscriptionInput(
        url=url,
        event_types=parse_event_types(body.get("event_types")),
        all_types="event_types" in body and body["event_types"] is None,
        description=description,
        enabled=enabled,
    )


# Set on the connection by a write that gives the relay a subscription to serve (created, or
# enabled again): its commit ends the relay's quiet spell at once (see Relay.run).
SUBSCRIBED = "tracker.notify.subscribed"


async def _subscribed(session: AsyncSession) -> None:
    (await session.connection()).info[SUBSCRIBED] = True


async def create_subscription(
    session: AsyncSession,
    data: SubscriptionInput,
    now: datetime,
    *,
    source: Source = "api",
    limit: int | None = None,
) -> Subscription:
    """A new enabled subscription with a fresh secret; it receives changes from now on. Refused
    (409) when `limit` subscriptions exist already, enabled or not."""
    assert data.url is not None
    if limit is not None:
        if session.get_bind().dialect.name == "postgresql":
            # Two creations at once must not both see room for one: they take turns (SQLite's
            # single writer already makes them).
            await session.execute(select(func.pg_advisory_xact_lock(SUBSCRIBE_LOCK)))
        existing = int(await session.scalar(select(func.count()).select_from(Subscription)) or 0)
        if existing >= limit:
            raise TooManySubscriptions(
                f"{existing} subscriptions exist and TRACKER_NOTIFY_MAX_SUBSCRIPTIONS is {limit}: "
                "delete one (DELETE /subscriptions/{id}) or raise the setting",
            )
    sub = Subscription(
        url=data.url,
        description=data.description,
        event_types=data.event_types,
        enabled=True,
        secret=new_secret(),
        source=source,
        cursor_seq=await latest_seq(session),
        created_at=now,
        updated_at=now,
    )
    session.add(sub)
    await session.flush()
    await _subscribed(session)
    return sub


async def get_subscription(session: AsyncSession, sub_id: int) -> Subscription:
    sub = await session.get(Subscription, sub_id)
    if sub is None:
        raise SubscriptionNotFound(f"no subscription with id {sub_id}", subscription_id=sub_id)
    return sub


async def list_subscriptions(session: AsyncSession) -> Sequence[Subscription]:
    return list(await session.scalars(select(Subscription).order_by(Subscription.id)))


async def update_subscription(
    session: AsyncSession, sub_id: int, data: SubscriptionInput, now: datetime
) -> Subscription:
    """Change the URL, event types, description or enabled flag; disabling skips what is
    pending, enabling starts again from the log's end."""
    sub = await get_subscription(session, sub_id)
    if data.url is not None:
        sub.url = data.url
    if data.event_types is not None or data.all_types:
        sub.event_types = data.event_types
    if data.description is not None:
        sub.description = data.description
    if data.enabled is False and sub.enabled:
        await disable_subscription(session, sub.id, "disabled through the API", now)
        await session.refresh(sub)
    elif data.enabled and not sub.enabled:
        sub.enabled = True
        sub.disabled_reason = None
        sub.disabled_at = None
        sub.first_failure_at = None
        sub.cursor_seq = await latest_seq(session)
        await _subscribed(session)
    sub.updated_at = now
    await session.flush()
    return sub


async def delete_subscription(session: AsyncSession, sub_id: int) -> None:
    sub = await get_subscription(session, sub_id)
    await session.delete(sub)
    await session.flush()


async def rotate_secret(session: AsyncSession, sub_id: int, now: datetime) -> Subscription:
    """A new secret; the current one keeps signing beside it for ROTATION_GRACE."""
    sub = await get_subscription(session, sub_id)
    sub.old_secret = sub.secret
    sub.old_secret_expires_at = now + ROTATION_GRACE
    sub.secret = new_secret()
    sub.updated_at = now
    await session.flush()
    return sub


def signing_secrets(sub: Subscription, now: datetime) -> tuple[str, ...]:
    """The secrets that sign a request now (`secrets_of`)."""
    return secrets_of(sub.secret, sub.old_secret, sub.old_secret_expires_at, now)


def secrets_of(
    secret: str, old: str | None, old_expires: datetime | None, now: datetime
) -> tuple[str, ...]:
    """The secrets that sign a request now: the current one, and the previous during its grace."""
    if old and old_expires is not None and now < old_expires:
        return (secret, old)
    return (secret,)


async def disable_subscription(
    session: AsyncSession, sub_id: int, reason: str, now: datetime
) -> bool:
    """Disable a subscription and skip its pending deliveries; idempotent. True when it was
    enabled until now."""
    disabled = await session.execute(
        update(Subscription)
        .where(Subscription.id == sub_id, Subscription.enabled.is_(True))
        .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Delivery)
        .where(Delivery.subscription_id == sub_id, Delivery.status.in_(("pending", "sending")))
        .values(status="skipped", lease_until=None, claim_id=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(disabled.rowcount)  # type: ignore[attr-defined]


async def ensure_env_subscription(
    session: AsyncSession, url: str, secret: str, now: datetime
) -> Subscription:
    """The subscription TRACKER_NOTIFY_URL declares, to every event, signed with
    TRACKER_NOTIFY_SECRET: created once, its URL and secret kept in step with the environment."""
    secret_key(secret)  # a malformed secret fails here, at startup
    found = await session.scalar(select(Subscription).where(Subscription.source == "env"))
    if found is None:
        sub = await create_subscription(
            session, SubscriptionInput(url=url, description=ENV_DESCRIPTION), now, source="env"
        )
        sub.secret = secret
        await session.flush()
        return sub
    if found.url != url or found.secret != secret:
        found.url = url
        found.secret = secret
        found.updated_at = now
        await session.flush()
    return found
