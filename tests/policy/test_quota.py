"""Quotas: the rate limiter's token bucket and the LLM token budget, in one process (with explicit
clocks) and shared by several processes through the database (the budget: no double-spend; the
rate: every granted call accounted for in the shared bucket). The rate limiter's reconciliation and
its overshoot bound: tests/policy/test_rate_sync.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mcp_server.db import open_engine
from mcp_server.errors import BackendUnavailable, RateLimited
from mcp_server.policy.quota import RateLimiter, TokenBudget

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0  # a fixed clock, on a period boundary for 60 s periods (T0 % 60 == 20)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = open_engine(f"sqlite:///{tmp_path / 'quota.db'}")
    yield eng
    eng.dispose()


# -- RateLimiter -----------------------------------------------------------------------------------


def test_burst_then_refused_with_retry_after(engine: Engine) -> None:
    limiter = RateLimiter(engine, per_minute=60, burst=3)  # one token a second
    for _ in range(3):
        limiter.take("p", now=T0)
    with pytest.raises(RateLimited) as info:
        limiter.take("p", now=T0)
    assert info.value.code == "rate_limited"
    assert info.value.retry_after == pytest.approx(1.0)
    assert info.value.details == {"retry_after": 1.0}
    assert "at most 60 a minute" in info.value.message and "bursts of 3" in info.value.message


def test_refill_over_time(engine: Engine) -> None:
    limiter = RateLimiter(engine, per_minute=60, burst=3)
    for _ in range(3):
        limiter.take("p", now=T0)
    with pytest.raises(RateLimited) as info:
        limiter.take("p", now=T0 + 0.25)  # a quarter token has come back
    assert info.value.retry_after == pytest.approx(0.75)
    limiter.take("p", now=T0 + 1.0)  # a whole token: granted (0 left)
    with pytest.raises(RateLimited) as info:
        limiter.take("p", now=T0 + 1.0)
    assert info.value.retry_after == pytest.approx(1.0)
    limiter.take("p", now=T0 + 2.5)  # 1.5 tokens: one granted, half a token left
    with pytest.raises(RateLimited) as info:
        limiter.take("p", now=T0 + 2.5)
    assert info.value.retry_after == pytest.approx(0.5)


def test_refill_is_capped_at_the_burst(engine: Engine) -> None:
    limiter = RateLimiter(engine, per_minute=60, burst=3)
    limiter.take("p", now=T0)
    for _ in range(3):  # an hour later: the bucket holds the burst, not 3600 tokens
        limiter.take("p", now=T0 + 3600)
    with pytest.raises(RateLimited):
        limiter.take("p", now=T0 + 3600)


def test_a_clock_going_backwards_refills_nothing(engine: Engine) -> None:
    limiter = RateLimiter(engine, per_minute=60, burst=1)
    limiter.take("p", now=T0)
    with pytest.raises(RateLimited):
        limiter.take("p", now=T0 - 100)


def test_slower_rate_gives_longer_retry_after(engine: Engine) -> None:
    limiter = RateLimiter(engine, per_minute=6, burst=1)  # one token every 10 s
    limiter.take("p", now=T0)
    with pytest.raises(RateLimited) as info:
        limiter.take("p", now=T0 + 4)
    assert info.value.retry_after == pytest.approx(6.0)


def test_principals_have_separate_buckets(engine: Engine) -> None:
    limiter = RateLimiter(engine, per_minute=60, burst=2)
    for _ in range(2):
        limiter.take("alice", now=T0)
    with pytest.raises(RateLimited):
        limiter.take("alice", now=T0)
    for _ in range(2):
        limiter.take("bob", now=T0)
    with pytest.raises(RateLimited):
        limiter.take("bob", now=T0)


def test_zero_rate_disables(engine: Engine) -> None:
    limiter = RateLimiter(engine, per_minute=0, burst=1)
    assert not limiter.enabled
    for _ in range(100):
        limiter.take("p", now=T0)
    assert limiter.sync(now=T0)
    limiter.start()
    assert not limiter.syncing
    limiter.close()
    with engine.connect() as conn:  # nothing is written either
        assert conn.execute(text("SELECT count(*) FROM rate_buckets")).scalar_one() == 0


def test_two_limiters_on_one_database_share_the_bucket(tmp_path: Path) -> None:
    """Shared at each sync (not at each call: see tests/policy/test_rate_sync.py for the bound)."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    one, two = open_engine(url), open_engine(url)
    try:
        a, b = RateLimiter(one, per_minute=60, burst=2), RateLimiter(two, per_minute=60, burst=2)
        a.take("p", now=T0)
        assert a.sync(now=T0)
        b.take("p", now=T0)
        assert b.sync(now=T0)  # b learns of a's call: the shared bucket is empty
        with pytest.raises(RateLimited):
            b.take("p", now=T0)
        assert a.sync(now=T0)  # a reads the level of the keys it holds: b's call is known
        with pytest.raises(RateLimited):
            a.take("p", now=T0)
    finally:
        one.dispose()
        two.dispose()


# -- TokenBudget -----------------------------------------------------------------------------------


def test_budget_reserve_and_settle(engine: Engine) -> None:
    budget = TokenBudget(engine, limit=100, period_seconds=60)
    now = T0  # 20 s into its period: 40 s to its end
    first = budget.reserve("p", 60, now=now)
    assert (first.key, first.tokens, first.period) == ("p", 60, int(now // 60))
    assert budget.used("p", now=now) == 60
    with pytest.raises(RateLimited) as info:
        budget.reserve("p", 50, now=now)
    assert info.value.retry_after == pytest.approx(40.0)
    assert info.value.details == {"retry_after": 40.0}
    assert "60 of 100 used" in info.value.message
    assert budget.used("p", now=now) == 60  # a refused reservation takes nothing
    budget.settle(first, 30)  # the call used less than reserved
    assert budget.used("p", now=now) == 30
    second = budget.reserve("p", 70, now=now + 1)  # exactly the budget: allowed
    assert budget.used("p", now=now) == 100
    with pytest.raises(RateLimited) as info:
        budget.reserve("p", 1, now=now + 10)
    assert info.value.retry_after == pytest.approx(30.0)
    budget.settle(second, 90)  # and more than reserved: recorded as used, even over the limit
    assert budget.used("p", now=now) == 120
    budget.settle(second, 90 - 1000)  # never below zero
    assert budget.used("p", now=now) == 0


def test_budget_period_rollover(engine: Engine) -> None:
    budget = TokenBudget(engine, limit=100, period_seconds=60)
    old = budget.reserve("p", 100, now=T0)
    with pytest.raises(RateLimited) as info:
        budget.reserve("p", 1, now=T0 + 39.5)
    assert info.value.retry_after == pytest.approx(0.5)
    nxt = T0 + 40  # the next period starts
    assert budget.used("p", now=nxt) == 0
    budget.reserve("p", 100, now=nxt)
    assert budget.used("p", now=nxt) == 100
    budget.settle(old, 0)  # settling last period's reservation leaves this period alone
    assert budget.used("p", now=nxt) == 100


def test_budget_principals_are_separate(engine: Engine) -> None:
    budget = TokenBudget(engine, limit=10, period_seconds=60)
    budget.reserve("alice", 10, now=T0)
    budget.reserve("bob", 10, now=T0)
    with pytest.raises(RateLimited):
        budget.reserve("alice", 1, now=T0)


def test_single_request_over_the_whole_budget(engine: Engine) -> None:
    budget = TokenBudget(engine, limit=100, period_seconds=60)
    with pytest.raises(RateLimited) as info:
        budget.reserve("p", 101, now=T0 + 5)
    assert info.value.retry_after == pytest.approx(35.0)
    assert "exceeds the whole budget of 100" in info.value.message
    assert budget.used("p", now=T0) == 0
    budget.reserve("p", 100, now=T0 + 5)  # the budget itself is untouched


# -- shared by several processes -------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mcp_server.db import open_engine
    from mcp_server.errors import RateLimited
    from mcp_server.policy.quota import RateLimiter, TokenBudget

    kind, url, key, now, ready, go = sys.argv[1:7]
    now = float(now)
    engine = open_engine(url)
    if kind == "rate":  # each call, then a sync: the shared row is written by both at once
        limiter = RateLimiter(engine, per_minute=60, burst=50)
        attempt, count = (lambda: (limiter.take(key, now=now), limiter.sync(now=now))), 40
    else:
        budget = TokenBudget(engine, limit=250, period_seconds=86400)
        attempt, count = (lambda: budget.reserve(key, 10, now=now)), 30
    with engine.connect():
        pass  # connect (and set the pragmas) before the start line
    Path(ready).touch()
    deadline = time.monotonic() + 30
    while not Path(go).exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.002)
    granted = 0
    for _ in range(count):
        try:
            attempt()
            granted += 1
        except RateLimited:
            pass
    if kind == "rate":
        assert limiter.sync(now=now)  # whatever a failed sync above left unreported
    print(granted)
    """
)


def run_children(kind: str, url: str, key: str, workdir: Path, n: int = 2) -> list[int]:
    """Start `n` processes on one database, release them together, return each one's grants.

    The clock is fixed (`now=` the same value in every process), so refills cannot add tokens while
    they run: every grant above the bucket or budget would be a double-spend."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    go = workdir / f"go-{kind}"
    now = str(time.time())
    children = []
    for i in range(n):
        ready = workdir / f"ready-{kind}-{i}"
        args = [sys.executable, "-c", CHILD, kind, url, key, now, str(ready), str(go)]
        children.append(
            (
                ready,
                subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env),
            )
        )
    try:
        deadline = time.monotonic() + 30
        while not all(ready.exists() for ready, _ in children):
            for _, child in children:
                if child.poll() is not None:
                    pytest.fail(f"child exited early: {child.communicate()}")
            assert time.monotonic() < deadline, "children did not start"
            time.sleep(0.01)
        go.touch()
        results = []
        for _, child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            results.append(int(out.strip()))
        return results
    finally:
        for _, child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    # Create the schema first: the children test the quota statements, not concurrent schema creation
    # (see test_concurrent_first_open_of_a_new_database).
    open_engine(url).dispose()
    return url


def shared_rate_level(url: str, key: str) -> float:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return float(
                conn.execute(
                    text("SELECT tokens FROM rate_buckets WHERE principal = :k"), {"k": key}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def check_rate_grants(grants: list[int], url: str, key: str) -> None:
    """80 attempts (40 each) on a bucket of 50 with the clock fixed, each followed by a sync: every
    grant is charged to the shared row exactly once (no lost update between the two processes),
    and they grant at least the bucket and at most one bucket each (the bound without syncs)."""
    assert shared_rate_level(url, key) == 50 - sum(grants), grants
    assert 50 <= sum(grants) <= 80, grants


def test_rate_limiter_across_processes_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    grants = run_children("rate", sqlite_url, "p", tmp_path)
    check_rate_grants(grants, sqlite_url, "p")


def test_token_budget_across_processes_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    grants = run_children("budget", sqlite_url, "p", tmp_path)
    assert sum(grants) == 25, grants  # 60 reservations of 10 against 250
    engine = open_engine(sqlite_url)
    try:
        budget = TokenBudget(engine, limit=250, period_seconds=86400)
        assert budget.used("p") == 250
    finally:
        engine.dispose()


@pytest.mark.parametrize(("kind", "expected"), [("rate", 50), ("budget", 25)])
def test_quotas_across_processes_postgres(
    kind: str, expected: int, postgres_url: str, tmp_path: Path
) -> None:
    open_engine(postgres_url).dispose()  # the schema, before the children start
    key = f"test-{uuid.uuid4()}"
    grants = run_children(kind, postgres_url, key, tmp_path)
    if kind == "rate":
        check_rate_grants(grants, postgres_url, key)
    else:
        assert sum(grants) == expected, grants


# -- a database that cannot be used ----------------------------------------------------------------


def test_database_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        open_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'q.db'}")
    assert info.value.code == "backend_unavailable"
    assert str(tmp_path) not in info.value.message  # no paths, SQL or parameters


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(BackendUnavailable):
        open_engine(f"sqlite:///{junk}")


def test_database_broken_after_opening(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    engine = open_engine(f"sqlite:///{path}")
    limiter = RateLimiter(engine, per_minute=60, burst=5)
    budget = TokenBudget(engine, limit=100, period_seconds=60)
    limiter.take("p")
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"garbage" * 1000)
    limiter.take("p")  # the rate is decided in memory: calls go on (see test_rate_sync.py)
    assert not limiter.sync()
    with pytest.raises(BackendUnavailable):
        budget.reserve("p", 1)
    with pytest.raises(BackendUnavailable):
        budget.used("p")
    engine.dispose()


def test_missing_table(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE rate_buckets"))
        conn.execute(text("DROP TABLE llm_budgets"))
    limiter = RateLimiter(engine, per_minute=60, burst=5)
    limiter.take("p")
    assert not limiter.sync()
    assert "rate_buckets" not in caplog.text  # no SQL in the log
    with pytest.raises(BackendUnavailable) as info:
        TokenBudget(engine, limit=100, period_seconds=60).reserve("p", 1)
    assert "llm_budgets" not in info.value.message  # no SQL in the message


def test_malformed_database_url() -> None:
    with pytest.raises(BackendUnavailable):
        open_engine("not a database url")


def test_concurrent_first_open_of_a_new_database(tmp_path: Path) -> None:
    """Four processes opening (and so migrating) a new database at the same moment all succeed, and
    the schema is made once."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from mcp_server.db import open_engine\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists(): time.sleep(0.001)\n"
        "open_engine(sys.argv[1]).dispose()\n"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", script, url, str(go)], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    time.sleep(1.0)  # let them all import and wait
    go.touch()
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        RateLimiter(engine, per_minute=60, burst=1).take("p")
    finally:
        engine.dispose()
