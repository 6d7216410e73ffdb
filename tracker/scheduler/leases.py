"""Named leases in the database, so one replica at a time runs a singleton job (reconciliation).

Statements: take a session, never commit.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.db import insert
from tracker.models import Lease


def new_owner() -> str:
    """A name for this process that no other replica (or restart of this one) shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


RECONCILE_LEASE = "reconcile"  # held by the replica that reconciles with VOD


async def acquire_lease(
    session: AsyncSession, name: str, owner: str, now: datetime, ttl: timedelta
) -> bool:
    """Take `name` for `owner` until now + ttl, or renew it; True if `owner` holds it afterwards.

    One upsert whose conflict branch fires only when `owner` already holds the lease or it has
    expired, so of two replicas racing for a free or expired lease exactly one wins: the primary
    key and the row lock decide, not a read-before-write.
    """
    stmt = insert(session, Lease).values(name=name, owner=owner, expires_at=now + ttl)
    upsert = stmt.on_conflict_do_update(
        index_elements=[Lease.name],
        set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
        where=or_(Lease.owner == owner, Lease.expires_at <= now),
    ).returning(Lease.owner)
    return (await session.execute(upsert)).scalar_one_or_none() == owner


async def release_lease(session: AsyncSession, name: str, owner: str, now: datetime) -> bool:
    """Let another replica take `name` at once (on shutdown); no-op unless `owner` holds it."""
    result = await session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.owner == owner, Lease.expires_at > now)
        .values(expires_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def lease_holder(session: AsyncSession, name: str, now: datetime) -> Lease | None:
    """The current holder of `name`, or None if nobody holds it."""
    lease = await session.scalar(select(Lease).where(Lease.name == name))
    return lease if lease is not None and lease.expires_at > now else None
