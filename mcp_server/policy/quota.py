"""Per-principal quotas kept in the database, so several server processes enforce one quota.

- `RateLimiter`: a token bucket per principal (`rate_per_minute`, `rate_burst`). Each call is one
  atomic `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`: refill by elapsed time, take one token if
  there is one, and say whether it was taken. No read-modify-write race between processes.
- `TokenBudget`: LLM tokens per principal per period. `reserve(n)` before an upstream call (refused,
  with the time until the period ends, when it would overrun), `settle(reservation, used)` after.

Both run on SQLite and PostgreSQL (the statements are built per dialect).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    bindparam,
    case,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db import Base, database_errors, transaction
from mcp_server.errors import BudgetSpent, InvalidDocument


class RateBucket(Base):
    __tablename__ = "rate_buckets"

    principal: Mapped[str] = mapped_column(String(512), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)
    granted: Mapped[bool] = mapped_column(Boolean)


class LlmBudget(Base):
    __tablename__ = "llm_budgets"

    principal: Mapped[str] = mapped_column(String(512), primary_key=True)
    period: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer)
    granted: Mapped[bool] = mapped_column(Boolean)


def _insert(engine: Engine) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_update` (SQLite and PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def _least(engine: Engine) -> tuple[Any, Any]:
    return (func.least, func.greatest) if engine.dialect.name == "postgresql" else (func.min, func.max)


class RateLimiter:
    """Token bucket per principal key; `take(key)` returns or raises `RateLimited` with retry_after."""

    def __init__(self, engine: Engine, per_minute: float, burst: int) -> None:
        self.engine = engine
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        # Built once with bound parameters, so SQLAlchemy compiles it once (per-call cost ~ the driver's).
        least, greatest = _least(engine)
        now = bindparam("now", type_=Float)
        refill = least(self.burst, RateBucket.tokens + greatest(0.0, now - RateBucket.updated) * self.rate)
        stmt = _insert(engine)(RateBucket).values(
            principal=bindparam("key", type_=String), tokens=self.burst - 1, updated=now, granted=True
        )
        self._take = stmt.on_conflict_do_update(
            index_elements=[RateBucket.principal],
            set_={
                "tokens": case((refill >= 1, refill - 1), else_=refill),
                "granted": refill >= 1,
                "updated": now,
            },
        ).returning(RateBucket.tokens, RateBucket.granted)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str, now: float | None = None) -> None:
        if not self.enabled:
            return
        params = {"key": key, "now": time.time() if now is None else now}
        with database_errors(), self.engine.begin() as conn:
            tokens, granted = conn.execute(self._take, params).one()
        if not granted:
            raise BudgetSpent(
                f"too many calls: at most {self.rate * 60:g} a minute (bursts of {self.burst:g}); "
                "wait and retry",
                retry_after=max(0.001, (1 - tokens) / self.rate),
            )


@dataclass(frozen=True)
class Reservation:
    key: str
    period: int
    tokens: int


class TokenBudget:
    """LLM tokens per principal per period, reserved before a call and settled after it."""

    def __init__(self, engine: Engine, limit: int, period_seconds: int) -> None:
        self.engine = engine
        self.limit = limit
        self.period_seconds = period_seconds
        # Built once with bound parameters, like RateLimiter's (compiled once, not per call).
        period, tokens = bindparam("period", type_=Integer), bindparam("tokens", type_=Integer)
        new_period = LlmBudget.period != period
        fits = LlmBudget.used + tokens <= limit
        stmt = _insert(engine)(LlmBudget).values(
            principal=bindparam("key", type_=String), period=period, used=tokens, granted=True
        )
        self._reserve = stmt.on_conflict_do_update(
            index_elements=[LlmBudget.principal],
            set_={
                "used": case((new_period, tokens), (fits, LlmBudget.used + tokens), else_=LlmBudget.used),
                "granted": case((new_period, True), (fits, True), else_=False),
                "period": period,
            },
        ).returning(LlmBudget.used, LlmBudget.granted)
        _, greatest = _least(engine)
        self._settle = (
            update(LlmBudget)
            .where(
                LlmBudget.principal == bindparam("b_key", type_=String),
                LlmBudget.period == bindparam("b_period", type_=Integer),
            )
            .values(used=greatest(0, LlmBudget.used + bindparam("b_delta", type_=Integer)))
        )

    def reserve(
        self, key: str, tokens: int, now: float | None = None, *, connection: Connection | None = None
    ) -> Reservation:
        now = time.time() if now is None else now
        period = int(now // self.period_seconds)
        retry_after = (period + 1) * self.period_seconds - now
        if tokens < 1:
            raise InvalidDocument("a token reservation must be at least 1 token")
        if tokens > self.limit:
            raise BudgetSpent(
                f"a request for {tokens} tokens exceeds the whole budget of {self.limit} per "
                f"{self.period_seconds} s",
                retry_after=retry_after,
            )
        with transaction(self.engine, connection) as conn:
            params = {"key": key, "period": period, "tokens": tokens}
            used, granted = conn.execute(self._reserve, params).one()
        if not granted:
            raise BudgetSpent(
                f"LLM token budget spent: {used} of {self.limit} used this period, {tokens} more requested",
                retry_after=retry_after,
            )
        return Reservation(key, period, tokens)

    def settle(self, reservation: Reservation, used: int, *, connection: Connection | None = None) -> None:
        """Replace the reserved amount by what was really used (same period only)."""
        delta = used - reservation.tokens
        if delta == 0:
            return
        params = {"b_key": reservation.key, "b_period": reservation.period, "b_delta": delta}
        with transaction(self.engine, connection) as conn:
            conn.execute(self._settle, params)

    def used(self, key: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        period = int(now // self.period_seconds)
        with database_errors(), self.engine.connect() as conn:
            row = conn.execute(
                select(LlmBudget.period, LlmBudget.used).where(LlmBudget.principal == key)
            ).first()
        return int(row.used) if row is not None and row.period == period else 0
