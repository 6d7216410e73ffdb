"""Statements: deliveries leased to a relay (claimed) for any number of subscriptions in one
statement, their bodies rendered once per change, and those never sent given back (released).

Each takes a session and never commits; the relay (`relay.py`) owns the transactions. A claim
leases due deliveries to one process: `status = 'sending'`, its `claim_id`, and `next_attempt_at`
moved to the lease's end (`lease_until` holds the same time). So a delivery is due when
`next_attempt_at <= now` whether it is pending or leased by a process that died: one range on the
partial index, and no delivery waits forever for a dead replica. No ORM object per delivery: rows
come back as tuples, and a change fanned out to many subscriptions is rendered once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    Row,
    Table,
    and_,
    bindparam,
    func,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import DELIVERY_DUE_SQL, Delivery, JobChange, Subscription
from tracker.notify.changes import change_json
from tracker.notify.subscriptions import secrets_of
from tracker.shapes import Change

# Subscriptions per statement on SQLite, which has no LATERAL: one UNION ALL arm each.
SQLITE_ARMS = 100


def is_due(now: datetime) -> Any:
    """Pending and due, or leased by a process whose lease ran out: a range of the partial index
    `ix_deliveries_due`, whose condition is written as literal SQL. With the statuses bound as
    parameters SQLite cannot tell that the index holds every row wanted, and read each of the
    subscription's deliveries instead (nor can a generic plan on PostgreSQL)."""
    return and_(text(DELIVERY_DUE_SQL), Delivery.next_attempt_at <= now)


@dataclass(frozen=True, slots=True)
class Target:
    """An enabled subscription with deliveries due: where they go and what signs them."""

    id: int
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased to this process, with everything needed to send it."""

    id: int
    subscription_id: int
    claim_id: str
    attempts: int
    trigger: str
    url: str
    secrets: tuple[str, ...]
    seq: int
    body: bytes
    lease_until: datetime


async def due_targets(
    session: AsyncSession, now: datetime, skip: Collection[int] = ()
) -> list[Target]:
    """Enabled subscriptions with a delivery due now (one probe of the partial index each),
    leaving out `skip` (those this process cannot take more of yet)."""
    due = select(Delivery.id).where(Delivery.subscription_id == Subscription.id, is_due(now))
    query = select(
        Subscription.id,
        Subscription.url,
        Subscription.secret,
        Subscription.old_secret,
        Subscription.old_secret_expires_at,
    ).where(Subscription.enabled.is_(True), due.exists())
    if skip:
        query = query.where(Subscription.id.not_in(list(skip)))
    rows = (await session.execute(query.order_by(Subscription.id))).all()
    return [
        Target(r.id, r.url, secrets_of(r.secret, r.old_secret, r.old_secret_expires_at, now))
        for r in rows
    ]


async def next_due(session: AsyncSession) -> datetime | None:
    """When the earliest delivery falls due (a pending one, or a lease that runs out): the
    earliest of each subscription's, each the first entry of its range of `ix_deliveries_due`
    (the minimum over the whole index read all of it at every idle turn while a receiver is
    down: 136 ms on SQLite and 88 on PostgreSQL at 1,000,000 waiting, benchmarks/due.py)."""
    first = (
        select(func.min(Delivery.next_attempt_at))
        .where(Delivery.subscription_id == Subscription.id, text(DELIVERY_DUE_SQL))
        .correlate(Subscription)
        .scalar_subquery()
    )
    return await session.scalar(select(func.min(first)).select_from(Subscription))


async def claim(
    session: AsyncSession,
    wants: Mapping[int, int],
    now: datetime,
    lease: timedelta,
    claim_id: str,
) -> list[Row[Any]]:
    """Lease up to `wants[subscription]` due deliveries of each subscription to `claim_id`,
    oldest first; return their (id, subscription_id, change_seq, attempts, trigger).

    PostgreSQL: one statement whatever the number of subscriptions, a LATERAL subquery per
    subscription locking with FOR UPDATE SKIP LOCKED, so replicas claiming at once take
    different rows. SQLite: a UNION ALL arm per subscription (SQLITE_ARMS per statement); the
    single writer makes each statement atomic.
    """
    wanted = [(sub, n) for sub, n in wants.items() if n > 0]
    if not wanted:
        return []
    table = cast(Table, Delivery.__table__)
    lease_until = now + lease
    values = {"status": "sending", "claim_id": claim_id, "lease_until": lease_until}
    values |= {"next_attempt_at": lease_until, "updated_at": now}
    returning = (
        table.c.id,
        table.c.subscription_id,
        table.c.change_seq,
        table.c.attempts,
        table.c.trigger,
    )
    if session.get_bind().dialect.name == "postgresql":
        subs = sql_cast(bindparam("subs"), ARRAY(BigInteger))
        slots = sql_cast(bindparam("slots"), ARRAY(Integer))
        w = func.unnest(subs, slots).table_valued("sub", "n").render_derived(name="w")
        picked = (
            select(table.c.id)
            .where(table.c.subscription_id == w.c.sub, is_due(now))
            .order_by(table.c.next_attempt_at, table.c.id)
            .limit(w.c.n)
            .with_for_update(skip_locked=True)
            .lateral("picked")
        )
        ids = select(picked.c.id).select_from(w.join(picked, true()))
        statement = update(table).where(table.c.id.in_(ids)).values(values).returning(*returning)
        params = {"subs": [s for s, _ in wanted], "slots": [n for _, n in wanted]}
        return list((await session.execute(statement, params)).all())
    rows: list[Row[Any]] = []
    for start in range(0, len(wanted), SQLITE_ARMS):
        arms = [
            select(
                select(table.c.id)
                .where(table.c.subscription_id == sub, is_due(now))
                .order_by(table.c.next_attempt_at, table.c.id)
                .limit(n)
                .subquery()
                .c.id
            )
            for sub, n in wanted[start : start + SQLITE_ARMS]
        ]
        picks = union_all(*arms) if len(arms) > 1 else arms[0]
        statement = update(table).where(table.c.id.in_(picks)).values(values).returning(*returning)
        rows += (await session.execute(statement)).all()
    return rows


async def render_bodies(session: AsyncSession, seqs: Collection[int]) -> dict[int, bytes]:
    """The webhook body of each change still in the log (a pruned one is missing)."""
    if not seqs:
        return {}
    columns = (JobChange.seq, JobChange.type, JobChange.occurred_at, JobChange.previous_state)
    query = select(*columns, JobChange.data).where(JobChange.seq.in_(list(seqs)))
    # A Row has every attribute change_json reads: no ORM object per change.
    return {
        row.seq: webhook_body(change_json(cast(JobChange, row)))
        for row in (await session.execute(query)).all()
    }


def webhook_body(change: Change) -> bytes:
    """The Standard Webhooks payload `{type, timestamp, data}`, as compact JSON bytes."""
    payload = {"type": change["type"], "timestamp": change["timestamp"], "data": change["data"]}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


async def release(session: AsyncSession, unsent: Sequence[Claimed], now: datetime) -> None:
    """Give back claimed deliveries that were never sent (their lease ran short before a slot
    of their subscription freed, or the relay stopped): pending again at once, no attempt."""
    if not unsent:
        return
    table = cast(Table, Delivery.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.claim_id == bindparam("b_claim"))
        .values(
            status="pending", lease_until=None, claim_id=None, next_attempt_at=now, updated_at=now
        ),
        [{"b_id": item.id, "b_claim": item.claim_id} for item in unsent],
    )


async def settle_pruned(
    session: AsyncSession, ids: Sequence[int], claim_id: str, now: datetime
) -> None:
    """Claimed deliveries whose change was pruned meanwhile: nothing is left to send."""
    if ids:
        await session.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(ids)), Delivery.claim_id == claim_id)
            .values(
                status="failed",
                lease_until=None,
                claim_id=None,
                next_attempt_at=None,
                last_error="change pruned",
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
