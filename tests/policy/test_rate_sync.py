"""The rate limiter decides in memory and reconciles through the database: one process alone is exact,
several processes on one database (here: several `RateLimiter`s, each with its own engine) converge on
one shared bucket per principal and overshoot it by no more than the bound in docs/security.md
("Quotas"). Every clock is injected (`now=`): nothing here waits or depends on timing."""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from sqlalchemy import Engine, create_engine, event, text

from mcp_server.db import open_engine
from mcp_server.errors import RateLimited
from mcp_server.policy.quota import RateBucket, RateLimiter
from mcp_server.server import build_server
from mcp_server.settings import Settings

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database shared by the "replicas" of a test: a SQLite file, or a throwaway PostgreSQL
    database (skipped when no server answers)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'rate.db'}"


@pytest.fixture
def engines(database_url: str) -> Iterator[Callable[[], Engine]]:
    """Open engines on the test's database (one per replica, as separate processes would have)."""
    opened: list[Engine] = []

    def make() -> Engine:
        opened.append(open_engine(database_url))
        return opened[-1]

    yield make
    for engine in opened:
        engine.dispose()


def replicas(engines: Callable[[], Engine], n: int, per_minute: float, burst: int) -> list[RateLimiter]:
    return [RateLimiter(engines(), per_minute, burst) for _ in range(n)]


def granted(limiter: RateLimiter, key: str, now: float, attempts: int = 10_000) -> int:
    """Take until refused (or `attempts`); how many were granted."""
    for count in range(attempts):
        try:
            limiter.take(key, now=now)
        except RateLimited:
            return count
    return attempts


def shared_level(engine: Engine, key: str) -> float:
    with engine.connect() as conn:
        return float(
            conn.execute(
                text("SELECT tokens FROM rate_buckets WHERE principal = :k"), {"k": key}
            ).scalar_one()
        )


def retry_after(limiter: RateLimiter, key: str, now: float) -> float:
    with pytest.raises(RateLimited) as info:
        limiter.take(key, now=now)
    return info.value.retry_after


def worst_excess(times: list[float], allowed: Callable[[float], float]) -> float:
    """The largest (calls granted in a window) - allowed(window length), over every window."""
    counts = Counter(times)
    moments = sorted(counts)
    before = [0, *itertools.accumulate(counts[t] for t in moments)]
    return max(
        (
            before[j + 1] - before[i] - allowed(moments[j] - moments[i])
            for i in range(len(moments))
            for j in range(i, len(moments))
        ),
        default=0.0,
    )


# -- one process: exact, and no database on the call path -----------------------------------------


def test_alone_a_process_grants_exactly_burst_then_rate_whatever_the_syncs(
    engines: Callable[[], Engine],
) -> None:
    """The same seeded calls, against a limiter that syncs after every step and one that never
    syncs: the same decisions, which are those of the exact token bucket."""
    synced = RateLimiter(engines(), per_minute=60, burst=3)  # one token a second
    reference = RateLimiter(create_engine("sqlite://"), per_minute=60, burst=3)  # never synced
    rng = random.Random(7)
    now, outcomes = T0, []
    for _ in range(400):
        now += rng.choice([0.0, 0.0, 0.25, 0.5, 1.0, 2.5, 10.0])
        key = rng.choice(["alice", "bob"])
        for _ in range(rng.choice([1, 2, 5])):
            a = b = True
            try:
                synced.take(key, now=now)
            except RateLimited:
                a = False
            try:
                reference.take(key, now=now)
            except RateLimited:
                b = False
            assert a == b
            outcomes.append(a)
        assert synced.sync(now=now)
    assert True in outcomes and False in outcomes
    assert shared_level(synced.engine, "alice") <= 3


def test_a_sync_never_takes_back_what_the_bucket_refilled(engines: Callable[[], Engine]) -> None:
    """A call, then five idle seconds (the bucket is full again before the sync): still a full burst."""
    limiter = RateLimiter(engines(), per_minute=60, burst=3)
    limiter.take("p", now=T0)
    assert limiter.sync(now=T0 + 5)
    assert granted(limiter, "p", T0 + 5) == 3
    assert retry_after(limiter, "p", T0 + 5) == pytest.approx(1.0)
    assert limiter.sync(now=T0 + 5)
    assert granted(limiter, "p", T0 + 6) == 1  # then one a second, as before


def test_take_never_touches_the_database_and_a_sync_is_one_statement(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'count.db'}")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    limiter = RateLimiter(engine, per_minute=60, burst=5)
    for i in range(200):
        for _ in range(3):
            limiter.take(f"p{i}", now=T0)
    assert statements == []
    assert limiter.sync(now=T0)
    writes = [s for s in statements if "rate_buckets" in s]
    assert len(writes) == 1 and writes[0].lstrip().upper().startswith("INSERT")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), sum(tokens) FROM rate_buckets")).one() == (200, 400.0)
    statements.clear()
    assert limiter.sync(now=T0 + 0.5)  # nothing used since: the held keys are read, nothing written
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")
    assert limiter.sync(now=T0 + 3) and limiter.held() == 0  # full again: forgotten
    statements.clear()
    assert limiter.sync(now=T0 + 4)  # nothing held: no database access at all
    assert statements == []
    engine.dispose()


# -- several processes: convergence and the overshoot bound ----------------------------------------


def test_after_a_sync_each_process_sees_the_others_spending(engines: Callable[[], Engine]) -> None:
    a, b, c = replicas(engines, 3, per_minute=60, burst=4)
    assert granted(a, "p", T0) == 4  # a spends the whole burst
    assert a.sync(now=T0)
    assert granted(b, "p", T0, attempts=1) == 1  # b has not synced since: its bucket is still full
    assert b.sync(now=T0)
    assert retry_after(b, "p", T0) == pytest.approx(2.0)  # 4 + 1 spent of 4: a debt of 1 token
    assert shared_level(a.engine, "p") == -1
    assert granted(c, "p", T0) == 4  # c never used "p": it learns of it at its first sync
    assert c.sync(now=T0)
    assert b.sync(now=T0) and a.sync(now=T0)  # a sync reads every key a process holds
    # All three now hold the shared level (-5): the same wait for everyone.
    for limiter in (a, b, c):
        assert retry_after(limiter, "p", T0) == pytest.approx(6.0)
    # Time refills the shared bucket for everyone at once, and a debt is repaid before any grant.
    assert all(granted(limiter, "p", T0 + 5.5) == 0 for limiter in (a, b, c))
    assert [granted(limiter, "p", T0 + 6, attempts=1) for limiter in (a, b, c)] == [1, 1, 1]
    for limiter in (a, b, c):
        assert limiter.sync(now=T0 + 6)
    assert shared_level(a.engine, "p") == pytest.approx(-2.0)  # 6 refilled, 3 more spent


def test_a_restarted_process_learns_the_shared_level_at_its_first_sync(engines: Callable[[], Engine]) -> None:
    first = RateLimiter(engines(), per_minute=60, burst=5)
    assert granted(first, "p", T0) == 5
    first.close(now=T0)  # reports the 5
    second = RateLimiter(engines(), per_minute=60, burst=5)
    second.take("p", now=T0 + 1)  # a fresh process starts full: one call granted...
    assert second.sync(now=T0 + 1)
    assert retry_after(second, "p", T0 + 1) == pytest.approx(1.0)  # ...then it holds the shared level


def test_without_syncs_each_process_is_still_one_exact_bucket(engines: Callable[[], Engine]) -> None:
    """The bound that holds whatever the database does: R processes, each never looser than one
    exact bucket, grant at most R x (burst + rate x W) in any W seconds."""
    burst, rate, n = 5, 2.0, 4
    limiters = replicas(engines, n, per_minute=rate * 60, burst=burst)
    times: list[float] = []
    for step in range(64):  # every replica greedy every 1/8 s, for 8 s, never syncing
        now = T0 + step / 8
        for limiter in limiters:
            times.extend([now] * granted(limiter, "p", now))
    assert len(times) == n * (burst + 15)  # each: its burst, then 2 a second (the last at 7.5 s)
    assert worst_excess(times, lambda w: n * (burst + rate * w)) <= 1e-6
    assert worst_excess(times, lambda w: burst + rate * w) > 0  # the overshoot is real, and bounded


def simulate(limiters: list[RateLimiter], *, sync: float, seconds: float, seed: int) -> list[float]:
    """A seeded adversary against replicas that each sync at most `sync` seconds after their previous
    sync: callers arrive at random replicas in random bursts (some greedy), with idle gaps long
    enough for buckets to refill and be forgotten. The grant times."""
    rng = random.Random(seed)
    next_sync = [T0 + rng.uniform(0, sync) for _ in limiters]
    now, times = T0, []
    while now < T0 + seconds:
        now += rng.choice([0.0, sync / 7, sync / 3, rng.uniform(0, sync), 3 * sync * rng.random()])
        for i in sorted(range(len(limiters)), key=lambda i: next_sync[i]):
            while next_sync[i] <= now:
                assert limiters[i].sync(now=next_sync[i])
                next_sync[i] += rng.uniform(0.05 * sync, sync)
        callers = rng.sample(range(len(limiters)), rng.randint(1, len(limiters)))
        for i in callers:
            times.extend([now] * granted(limiters[i], "p", now, attempts=rng.choice([1, 2, 5, 10_000])))
    return times


@pytest.mark.parametrize("seed", range(4))
def test_with_syncs_the_overshoot_is_bounded_over_any_window(
    engines: Callable[[], Engine], seed: int
) -> None:
    """R processes syncing every T seconds at most: in any W seconds at most
    burst + rate x W + (R - 1) x (burst + 2 x rate x T), whatever W (the excess does not grow with it)."""
    rng = random.Random(seed)
    n, burst, per_minute, sync = rng.randint(2, 4), rng.randint(1, 6), rng.choice([6, 60, 120]), 1.0
    rate = per_minute / 60
    limiters = replicas(engines, n, per_minute, burst)
    times = simulate(limiters, sync=sync, seconds=60, seed=seed)
    assert len(times) > burst + rate * 10
    bound = (n - 1) * (burst + 2 * rate * sync)
    assert worst_excess(times, lambda w: burst + rate * w + bound) <= 1e-6
    assert worst_excess(times, lambda w: n * (burst + rate * w)) <= 1e-6  # and the bound without syncs


def test_greedy_processes_overshoot_once_then_share_the_rate(engines: Callable[[], Engine]) -> None:
    """Four greedy processes with the default settings, syncing every second at staggered moments,
    for two minutes: the first second grants about four bursts; after that they share one rate.
    (The example in docs/security.md: at most 560 calls in a second, 1800 in a minute.)"""
    defaults = Settings.model_fields
    n, sync = 4, defaults["rate_sync_seconds"].default
    burst, per_minute = defaults["rate_burst"].default, defaults["rate_per_minute"].default
    rate = per_minute / 60
    assert (n, burst, rate, sync) == (4, 120, 20, 1.0)
    limiters = replicas(engines, n, per_minute=per_minute, burst=burst)
    times: list[float] = []
    for step in range(960):  # every 1/8 s
        now = T0 + step / 8
        for i, limiter in enumerate(limiters):
            times.extend([now] * granted(limiter, "p", now))
            if step % 8 == 2 * i:  # replica i syncs at .0, .25, .5, .75 of each second
                assert limiter.sync(now=now)
    first_second = sum(1 for t in times if t <= T0 + sync)
    assert first_second > burst + rate * sync  # several replicas each spent a burst
    bound = (n - 1) * (burst + 2 * rate * sync)
    assert worst_excess(times, lambda w: burst + rate * w + bound) <= 1e-6
    assert worst_excess(times, lambda w: n * (burst + rate * w)) <= 1e-6
    assert n * (burst + rate * 1) == 560 and burst + rate * 60 + bound == 1800  # the documented example
    late = [t for t in times if t >= T0 + 60]  # a later minute: the shared rate
    assert rate * 60 - burst <= len(late) <= burst + rate * 60 + bound


# -- the database away ------------------------------------------------------------------------------


def test_an_unreachable_database_never_fails_a_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_server.policy.quota")
    engine = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    limiter = RateLimiter(engine, per_minute=60, burst=2)
    for step in range(3):
        assert granted(limiter, "p", T0 + step) == (2 if step == 0 else 1)
        assert not limiter.sync(now=T0 + step)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # logged once, not per sync
    assert "decided by this process alone" in warnings[0].getMessage()
    assert "127.0.0.1" not in caplog.text and "rate_buckets" not in caplog.text  # no URL, no SQL
    engine.dispose()


def test_what_a_failed_sync_did_not_report_a_later_one_does(
    engines: Callable[[], Engine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcp_server.policy.quota")
    limiter = RateLimiter(engines(), per_minute=60, burst=5)
    engine = limiter.engine
    with engine.begin() as conn:
        RateBucket.__table__.drop(conn)  # the database fails every rate statement
    assert granted(limiter, "p", T0, attempts=2) == 2
    assert not limiter.sync(now=T0)
    assert granted(limiter, "p", T0, attempts=1) == 1
    assert not limiter.sync(now=T0)
    with engine.begin() as conn:
        RateBucket.__table__.create(conn)  # back
    assert limiter.sync(now=T0)
    assert shared_level(engine, "p") == 2  # 5 - (2 + 1): nothing lost, nothing counted twice
    assert granted(limiter, "p", T0) == 2  # and the decisions never changed
    assert "shared through the database again" in caplog.text


# -- memory ----------------------------------------------------------------------------------------


def test_idle_full_buckets_are_forgotten_at_a_sync(engines: Callable[[], Engine]) -> None:
    a, b = replicas(engines, 2, per_minute=60, burst=4)  # full again 4 s after the last call
    a.take("quiet", now=T0)
    granted(a, "busy", T0)
    assert a.sync(now=T0) and a.held() == 2
    granted(b, "busy", T0)
    assert b.sync(now=T0)  # b's spending puts "busy" in debt (-4)
    granted(a, "busy", T0 + 1)
    assert a.sync(now=T0 + 1)  # a reads the debt
    assert a.sync(now=T0 + 5) and a.held() == 1  # "quiet" is full again: forgotten; "busy" is not
    assert a.sync(now=T0 + 9) and a.held() == 0  # ...until it has refilled too
    assert granted(a, "quiet", T0 + 9) == 4  # a forgotten key starts full, as it was


def test_at_most_max_keys_are_held_and_a_dropped_key_is_still_reported(engines: Callable[[], Engine]) -> None:
    assert RateLimiter(engines(), per_minute=60, burst=3).max_keys == 100_000  # the documented default
    limiter = RateLimiter(engines(), per_minute=60, burst=3, max_keys=100)
    for i in range(200):
        limiter.take(f"p{i}", now=T0)
        assert limiter.held() <= 100
    assert limiter.sync(now=T0)
    with limiter.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), sum(tokens) FROM rate_buckets")).one() == (200, 400.0)


def test_past_twice_max_keys_in_one_interval_the_oldest_counts_are_not_shared(
    engines: Callable[[], Engine],
) -> None:
    """The documented limit of the memory bound: max_keys buckets and max_keys counts of dropped
    buckets; with more principals than that in one sync interval the oldest counts are dropped."""
    limiter = RateLimiter(engines(), per_minute=60, burst=3, max_keys=100)
    for i in range(1000):
        limiter.take(f"p{i}", now=T0)
    assert limiter.held() == 100
    assert limiter.sync(now=T0)
    with limiter.engine.connect() as conn:
        keys = conn.execute(text("SELECT principal FROM rate_buckets")).scalars().all()
    assert sorted(keys) == sorted(f"p{i}" for i in range(800, 1000))


# -- services: started with the server, flushed when it closes --------------------------------------


@pytest.mark.anyio
async def test_the_server_syncs_in_the_background_and_reports_at_close(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(rate_per_minute=60, rate_burst=5, rate_sync_seconds=3600)
    server = build_server(settings)
    async with Client(server) as client:
        services = await server.host.ready()
        assert services.rate_limiter.syncing
        for _ in range(2):
            assert not (await client.call_tool("validate_maml", {"document": "x"})).is_error
    assert not services.rate_limiter.syncing
    engine = open_engine(settings.database)
    try:
        with engine.connect() as conn:
            rows: Any = conn.execute(text("SELECT principal, tokens FROM rate_buckets")).all()
        assert [(p.split(" ")[-1], round(t)) for p, t in rows] == [("local", 3)]
    finally:
        engine.dispose()
