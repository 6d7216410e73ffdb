"""The spend guard's ledger (tracker/submit/budget.py, migration 0007)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from tracker.models.base import Base

# --- spend (tracker/submit/budget.py) -----------------------------------------------------------


class Budget(Base):
    """The spend guard's ledger: video submitted per UTC day and job type, in milliseconds
    (integers, so that the check `used + requested <= limit` is exact), the day's limit as last
    applied, and when the day's budget ran out (set once, with its `budget.exhausted` change).
    Written in the claim's transaction by a conditional UPDATE, so concurrent submitters on any
    number of replicas never spend past the limit."""

    __tablename__ = "budgets"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_ms: Mapped[int] = mapped_column(BigInteger)
    jobs: Mapped[int] = mapped_column(Integer)
    limit_ms: Mapped[int | None] = mapped_column(BigInteger)
    exhausted_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
