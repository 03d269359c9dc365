"""Per-principal quotas shared by several server processes through the database.

- `RateLimiter`: a token bucket per principal (`rate_per_minute`, `rate_burst`), decided in memory
  by each process (no database access on the call path) and reconciled through the `rate_buckets`
  table every `rate_sync_seconds`: each process reports the calls it granted and reads the shared
  level back. One process alone is exact; several may together overshoot by a bounded amount (see
  `RateLimiter` and docs/security.md "Quotas").
- `TokenBudget`: LLM tokens per principal per period, exact across processes: `reserve(n)` before an
  upstream call is one atomic `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` (refused, with the
  time until the period ends, when it would overrun), `settle(reservation, used)` after.

Both run on SQLite and PostgreSQL (the statements are built per dialect).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
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
from mcp_server.errors import BudgetSpent, InvalidDocument, MacroslowError

log = logging.getLogger(__name__)
ROUNDING = 1e-9  # tokens: a smaller difference between two sums of the same calls is rounding
CHUNK = 500  # keys per read statement, and per hold of the lock during a sync


class RateBucket(Base):
    """A principal's shared rate bucket: its level `tokens` at time `updated` (negative: a debt),
    charged by each process's sync; `granted`: whether the last report left it without debt."""

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


class _Bucket:
    """One principal's bucket in this process: its level (at time `at`), the calls granted since
    the last report (`pending`), and the shared level it last read (`view`, refilled to `view_at`),
    which is the baseline for telling the others' spending apart from its own."""

    __slots__ = ("at", "level", "pending", "view", "view_at")

    def __init__(self, burst: float, now: float) -> None:
        self.level = burst
        self.at = now
        self.pending = 0
        self.view = burst
        self.view_at = now


@dataclass(frozen=True)
class _Report:
    """A key's part in one sync: the calls to report (`spent`: the live bucket's `own` plus those of
    a dropped bucket of the same key) and the live bucket's baseline (`view` at `view_at`)."""

    key: str
    spent: int
    bucket: _Bucket | None
    own: int
    view: float
    view_at: float


class RateLimiter:
    """Token bucket per principal key, decided in memory and shared through the database.

    `take(key)` grants, or refuses with `BudgetSpent` (and its `retry_after`), with no database
    access: a lock, a dictionary look-up and some arithmetic. `sync()` (every `sync_seconds` on a
    background thread started by `start()`, and once more by `close()`) reports the calls granted
    since the last sync into each key's shared `rate_buckets` row (one upsert for all such keys, in
    key order so two processes never deadlock; the row is refilled at `rate` up to `burst`, then
    charged, and may go negative: a debt), reads back the shared level of every other key it holds,
    and lowers each local level by what the other processes spent since the previous sync.

    Guarantees (tests: tests/policy/test_rate_sync.py; the bound: docs/security.md "Quotas"):

    - One process alone is an exact token bucket: `burst` at once, then `rate` a second; syncing
      never changes its decisions.
    - A process is never looser than that exact bucket on its own (a sync only lowers its level), so
      R processes grant one principal at most R x (burst + rate x W) calls in any W seconds,
      whatever the database does.
    - With the database reachable and each process syncing at most T seconds after its previous
      sync: at most burst + rate x W + (R - 1) x (burst + 2 x rate x T) in any W seconds. Every
      granted call is charged to the shared row and a debt is repaid before anyone is granted
      again, so the excess does not grow with W.
    - A failed sync (database unreachable) changes no decision: it is logged once, and what it did
      not report a later sync reports.
    - Memory is bounded: a key full again (locally and shared) with nothing to report is forgotten
      at a sync (a new bucket for it starts from the same state), and at most `max_keys` keys are
      held; past that the least recently used is forgotten (it starts full if seen again), its
      unreported calls kept for the next sync, for at most `max_keys` such keys (with more than
      2 x `max_keys` principals in one sync interval the oldest of those counts are not shared).
    """

    def __init__(
        self,
        engine: Engine,
        per_minute: float,
        burst: int,
        *,
        sync_seconds: float = 1.0,
        max_keys: int = 100_000,
    ) -> None:
        self.engine = engine
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.sync_seconds = sync_seconds
        self.max_keys = max_keys
        self._lock = threading.Lock()  # guards the fields below; never held during database I/O
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently used first
        self._orphans: OrderedDict[str, int] = OrderedDict()  # unreported calls of dropped keys
        self._sync_lock = threading.Lock()  # one sync at a time
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Built once with bound parameters only in VALUES (so one statement carries many rows): a
        # row's `tokens` is burst - spent, its `updated` the reporter's clock; on conflict the
        # shared level is refilled to that clock (never backwards) and charged the spent calls.
        least, greatest = _least(engine)
        new = _insert(engine)(RateBucket)
        spent = self.burst - new.excluded.tokens
        refill = least(
            self.burst,
            RateBucket.tokens + greatest(0.0, new.excluded.updated - RateBucket.updated) * self.rate,
        )
        self._report = new.on_conflict_do_update(
            index_elements=[RateBucket.principal],
            set_={
                "tokens": refill - spent,
                "granted": refill - spent >= 0,
                "updated": greatest(RateBucket.updated, new.excluded.updated),
            },
        ).returning(RateBucket.principal, RateBucket.tokens, RateBucket.updated)
        self._read = select(RateBucket.principal, RateBucket.tokens, RateBucket.updated).where(
            RateBucket.principal.in_(bindparam("keys", expanding=True))
        )

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    # -- the call path -----------------------------------------------------------------------------

    def take(self, key: str, now: float | None = None) -> None:
        """Grant one call to `key` or raise `BudgetSpent`; no database access."""
        if not self.enabled:
            return
        now = time.time() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._add(key, now)
            else:
                self._buckets.move_to_end(key)
            level = self._refilled(bucket, now)
            if level >= 1:
                bucket.level = level - 1
                bucket.pending += 1
                return
            bucket.level = level
        raise BudgetSpent(
            f"too many calls: at most {self.rate * 60:g} a minute (bursts of {self.burst:g}); wait and retry",
            retry_after=max(0.001, (1 - level) / self.rate),
        )

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        """The bucket's level at `now` (a clock going backwards refills nothing), stored."""
        if now > bucket.at:
            bucket.level = min(self.burst, bucket.level + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket.level

    def _add(self, key: str, now: float) -> _Bucket:
        """A full bucket for a key this process does not hold; the least recently used key makes
        room when `max_keys` are held (its unreported calls wait in `_orphans`)."""
        if len(self._buckets) >= self.max_keys:
            old_key, old = self._buckets.popitem(last=False)
            if old.pending:
                self._orphan(old_key, old.pending)
        bucket = self._buckets[key] = _Bucket(self.burst, now)
        return bucket

    def _orphan(self, key: str, spent: int) -> None:
        self._orphans[key] = self._orphans.pop(key, 0) + spent
        while len(self._orphans) > self.max_keys:  # past the cap the oldest count is not shared
            self._orphans.popitem(last=False)

    # -- reconciliation ------------------------------------------------------------------------------

    def start(self) -> None:
        """Sync every `sync_seconds` on a background thread until `close()`."""
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="macroslow-rate-sync", daemon=True)
        self._thread.start()

    @property
    def syncing(self) -> bool:
        """Whether the background sync thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def close(self, now: float | None = None) -> None:
        """Stop the background thread, then report what is still unreported (one last sync)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self.sync(now)

    def _run(self) -> None:
        while not self._stop.wait(self.sync_seconds):
            try:
                self.sync()
            except Exception:  # a bug must not end the syncing: calls are still decided locally
                log.exception("rate limit sync failed")

    def sync(self, now: float | None = None) -> bool:
        """Report the calls granted since the last sync, read the shared levels back and lower each
        local level by the others' spending; forget full buckets. False (logged once, nothing lost,
        no decision changed) when the database cannot be used. Blocking: not on the event loop."""
        if not self.enabled:
            return True
        now = time.time() if now is None else now
        with self._sync_lock:
            reports = self._collect()
            try:
                shared = self._exchange(reports, now) if reports else {}
            except MacroslowError as exc:
                self._restore(reports)
                if not self._failing:
                    log.warning(
                        "rate limits are decided by this process alone until the database answers: %s", exc
                    )
                self._failing = True
                return False
            except Exception:
                self._restore(reports)
                if not self._failing:
                    log.exception("rate limits are decided by this process alone (sync failed)")
                self._failing = True
                return False
            if self._failing:
                log.info("rate limits are shared through the database again")
            self._failing = False
            self._apply(reports, shared, now)
        return True

    def _collect(self) -> list[_Report]:
        """Every held key (and every dropped key's unreported calls), its calls since the last sync
        moved out of `pending`; the lock is held for `CHUNK` keys at a time, not for all."""
        with self._lock:
            keys = list(self._buckets)
            orphans, self._orphans = self._orphans, OrderedDict()
        reports = []
        for i in range(0, len(keys), CHUNK):
            with self._lock:
                for key in keys[i : i + CHUNK]:
                    bucket = self._buckets.get(key)
                    if bucket is None:
                        continue  # dropped meanwhile: its calls wait in `_orphans`
                    own, bucket.pending = bucket.pending, 0
                    spent = own + orphans.pop(key, 0)
                    reports.append(_Report(key, spent, bucket, own, bucket.view, bucket.view_at))
        reports.extend(_Report(key, spent, None, 0, self.burst, 0.0) for key, spent in orphans.items())
        return reports

    def _exchange(self, reports: list[_Report], now: float) -> dict[str, tuple[float, float]]:
        """One upsert for the keys with calls to report (sorted: two processes lock rows in the same
        order, so they never deadlock), one read per `CHUNK` other keys: key -> (level, at)."""
        rows = [
            {
                "principal": r.key,
                "tokens": self.burst - r.spent,
                "updated": now,
                "granted": r.spent <= self.burst,
            }
            for r in sorted((r for r in reports if r.spent), key=lambda r: r.key)
        ]
        idle = [r.key for r in reports if not r.spent]
        shared: dict[str, tuple[float, float]] = {}
        with database_errors(), self.engine.begin() as conn:
            if rows:
                for key, tokens, updated in conn.execute(self._report, rows):
                    shared[key] = (tokens, updated)
            for i in range(0, len(idle), CHUNK):
                for key, tokens, updated in conn.execute(self._read, {"keys": idle[i : i + CHUNK]}):
                    shared[key] = (tokens, updated)
        return shared

    def _restore(self, reports: list[_Report]) -> None:
        """Put back what a failed sync did not report, for the next one."""
        with self._lock:
            for r in reports:
                if r.bucket is not None and self._buckets.get(r.key) is r.bucket:
                    r.bucket.pending += r.own
                    orphaned = r.spent - r.own
                else:
                    orphaned = r.spent
                if orphaned:
                    self._orphan(r.key, orphaned)

    def _apply(self, reports: list[_Report], shared: dict[str, tuple[float, float]], now: float) -> None:
        """Lower each local level by the others' spending since the last sync, take the shared level
        as the new baseline, and forget a key that is full (locally and shared) with nothing to
        report: a new bucket for it would start from the same state."""
        live = [r for r in reports if r.bucket is not None]
        for i in range(0, len(live), CHUNK):
            with self._lock:
                for r in live[i : i + CHUNK]:
                    bucket = r.bucket
                    if bucket is None or self._buckets.get(r.key) is not bucket:
                        continue  # dropped meanwhile: a new bucket starts from its own baseline
                    tokens, at = shared.get(r.key, (self.burst, now))  # no row: nobody spent
                    level = min(self.burst, tokens + max(0.0, now - at) * self.rate)
                    alone = min(self.burst, r.view + max(0.0, now - r.view_at) * self.rate) - r.own
                    others = alone - level  # what the other processes spent since the last sync
                    if others > ROUNDING:
                        bucket.level -= others
                    bucket.view, bucket.view_at = level, now
                    local = bucket.level + max(0.0, now - bucket.at) * self.rate
                    if not bucket.pending and local >= self.burst and level >= self.burst:
                        del self._buckets[r.key]

    def held(self) -> int:
        """How many keys this process holds (bounded by `max_keys`)."""
        with self._lock:
            return len(self._buckets)


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
