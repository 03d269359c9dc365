"""The receipts ledger under concurrency and crashes, with real processes.

- Several processes appending to one SQLite file (the durable engine's `BEGIN IMMEDIATE`) or one
  PostgreSQL database (the queue, one integrator at a time): the log never forks, `seq` stays
  contiguous, every process gets distinct places, a checkpoint covers every receipt that was
  answered, and the whole log verifies.
- Several processes opening a new ledger at once: all succeed, one head, one origin.
- Two real server processes on one PostgreSQL database, eight MCP clients calling tools: one log.
- A writer SIGKILLed mid-stream: nothing it was told is stored is lost, no half receipt, the log
  verifies and appending continues where it stopped.
- PostgreSQL: the integrator SIGKILLed while it holds the integration lock mid-batch, beside another
  writer: the other takes over, every answered receipt is covered and its proof verifies, the dead
  writer's unanswered receipt is integrated behind a recovery receipt, the log never forks.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp.client import Client
from sqlalchemy import func
from sqlalchemy import select as sql_select

from mcp_server.db import open_engine
from mcp_server.home import initialize, open_keys
from mcp_server.ledger.models import ReceiptRow
from mcp_server.ledger.proofs import check_proof
from mcp_server.ledger.store import Draft, Ledger, VerifyReport
from mcp_server.settings import Settings
from tests.server.test_transports import SERVE, _env, _free_port

pytestmark = [pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
RUN_TIMEOUT = 90.0


def _settings(home: Path) -> Settings:
    return Settings(home=home, _env_file=None)  # type: ignore[call-arg]


def _home(tmp_path: Path) -> Path:
    """A home with its signing key (trusted), made once before any child starts."""
    home = tmp_path / "home"
    initialize(_settings(home), example=False)
    return home


def _ledger(url: str, home: Path) -> Ledger:
    return Ledger(open_engine(url, durable=True), open_keys(_settings(home)))


def _draft(principal: str = "agent://x") -> Draft:
    return Draft(
        principal=principal,
        issuer="local",
        token_id=None,
        scopes="",
        tool="t",
        action=None,
        decision="allowed",
        reason=None,
        outcome="ok",
    )


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


def _rows(ledger: Ledger) -> list[tuple[int, str, str]]:
    """(seq, id, principal) of every stored receipt, in order of seq."""
    return [(r.seq, r.id, r.principal) for r, _ in ledger.rows()]


def _count(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(sql_select(func.count()).select_from(ReceiptRow)).scalar_one())


def _assert_verified(report: VerifyReport, receipts: int, checkpoints: int, verified: int) -> None:
    assert report.problems == []
    assert report.ok
    assert report.first_bad_seq is None
    assert (report.receipts, report.checkpoints, report.verified_size) == (receipts, checkpoints, verified)


# -- several processes appending to one ledger -----------------------------------------------------

APPENDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from mcp_server.db import open_engine
    from mcp_server.home import open_keys
    from mcp_server.ledger.store import Draft, Ledger
    from mcp_server.settings import Settings

    home, url, count, tag, ready, go = sys.argv[1:7]
    settings = Settings(home=Path(home), _env_file=None)
    ledger = Ledger(open_engine(url, durable=True), open_keys(settings))
    draft = Draft(
        principal=f"agent://child-{tag}", issuer="local", token_id=None, scopes="", tool="t",
        action=None, decision="allowed", reason=None, outcome="ok",
    )
    Path(ready).touch()
    deadline = time.monotonic() + 60
    while not Path(go).exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.002)
    seqs = [ledger.append(draft).seq for _ in range(int(count))]
    print(json.dumps(seqs))
    """
)


def run_appenders(url: str, home: Path, workdir: Path, *, children: int, count: int) -> list[list[int]]:
    """Start `children` processes on one ledger, release them together; each appends `count`
    receipts as agent://child-<i> and reports the seqs it was given, in order."""
    go = workdir / "go"
    procs: list[tuple[Path, subprocess.Popen[str]]] = []
    for i in range(children):
        ready = workdir / f"ready-{i}"
        args = [
            sys.executable,
            "-c",
            APPENDER,
            str(home),
            url,
            str(count),
            str(i),
            str(ready),
            str(go),
        ]
        procs.append(
            (
                ready,
                subprocess.Popen(
                    args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env()
                ),
            )
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(ready.exists() for ready, _ in procs):
            for _, proc in procs:
                if proc.poll() is not None:
                    pytest.fail(f"child exited early: {proc.communicate()}")
            assert time.monotonic() < deadline, "children did not start"
            time.sleep(0.01)
        go.touch()
        results = []
        for _, proc in procs:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
        return results
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def check_appenders(url: str, home: Path, tmp_path: Path, *, children: int, count: int) -> None:
    total = children * count
    _ledger(url, home).engine.dispose()  # the schema and the head, before the children start
    per_child = run_appenders(url, home, tmp_path, children=children, count=count)

    # Each child got `count` places, in increasing order; together they are exactly 0..total-1.
    assert [len(seqs) for seqs in per_child] == [count] * children
    for seqs in per_child:
        assert seqs == sorted(seqs) and len(set(seqs)) == count
    assert sorted(s for seqs in per_child for s in seqs) == list(range(total))

    ledger = _ledger(url, home)
    try:
        rows = _rows(ledger)
        assert _count(ledger) == total
        assert ledger.size() == total
        assert [seq for seq, _, _ in rows] == list(range(total))
        assert len({rid for _, rid, _ in rows}) == total
        # The receipt stored at each seq is the one that child was told it got.
        for i, seqs in enumerate(per_child):
            assert [seq for seq, _, who in rows if who == f"agent://child-{i}"] == seqs
        latest = ledger.latest_checkpoint()
        assert latest is not None and latest.size == total
        sizes = [cp.size for cp in ledger.checkpoints()]
        assert sizes == sorted(set(sizes))  # one per batch, each over a longer log
        _assert_verified(ledger.verify(), total, len(sizes), total)
    finally:
        ledger.engine.dispose()


def test_four_processes_append_to_one_sqlite_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    check_appenders(url, _home(tmp_path), tmp_path, children=4, count=500)


def test_four_processes_append_to_one_postgres_ledger(postgres_url: str, tmp_path: Path) -> None:
    check_appenders(postgres_url, _home(tmp_path), tmp_path, children=4, count=200)


OPENER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mcp_server.db import open_engine
    from mcp_server.ledger.store import Ledger

    url, go = sys.argv[1:3]
    engine = open_engine(url, durable=True)
    with engine.connect():
        pass
    Path(go + ".ready." + sys.argv[3]).touch()
    while not Path(go).exists():
        time.sleep(0.001)
    print(Ledger(engine, None).origin)
    """
)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_concurrent_first_open_of_a_ledger(fresh_url: str, tmp_path: Path) -> None:
    """Processes opening a new ledger at the same moment (two servers starting together) all
    succeed and agree on one log: one head, one origin."""
    open_engine(fresh_url).dispose()  # the schema only: the ledger head is made by the children
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, fresh_url, str(go), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        for i in range(4)
    ]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(Path(f"{go}.ready.{i}").exists() for i in range(4)):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "children did not start"
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=RUN_TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    origins = {out.strip() for out, _ in outputs}
    ledger = Ledger(open_engine(fresh_url, durable=True), None)
    try:
        assert origins == {ledger.origin}
        assert ledger.size() == 0
    finally:
        ledger.engine.dispose()


# -- two server processes, eight clients, one PostgreSQL ledger --------------------------------------


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"server did not start listening: {log.read_text()}"
            time.sleep(0.05)


@pytest.fixture
def two_servers(
    postgres_url: str, tmp_path: Path
) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    """Two `serve --transport streamable-http --no-auth` processes, started together, on one home and
    one PostgreSQL database; callers are agent://server-0 and agent://server-1."""
    home = _home(tmp_path)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    ports = []
    try:
        for i in range(2):
            port = _free_port()
            log_path = tmp_path / f"server-{i}.log"
            log = open(log_path, "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            env = {
                **_env(home),
                "MACROSLOW_DATABASE_URL": postgres_url,
                "MACROSLOW_RATE_PER_MINUTE": "0",
                "MACROSLOW_LOCAL_SUBJECT": f"server-{i}",
            }
            cmd = [*SERVE, "--transport", "streamable-http", "--no-auth", "--port", str(port)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            ports.append(port)
        deadline = time.monotonic() + START_TIMEOUT
        for i, (proc, port) in enumerate(zip(procs, ports, strict=True)):
            _wait_listening(proc, port, tmp_path / f"server-{i}.log", deadline)
        yield [f"http://127.0.0.1:{port}" for port in ports], procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


CLIENTS_PER_SERVER = 4
CALLS_PER_CLIENT = 50


@pytest.mark.anyio
async def test_two_servers_eight_clients_one_postgres_ledger(
    two_servers: tuple[list[str], list[subprocess.Popen[bytes]]], postgres_url: str, tmp_path: Path
) -> None:
    urls, procs = two_servers
    results: Counter[tuple[int, bool, bool]] = Counter()
    proofs: list[str] = []

    async def client(server: int) -> None:
        async with Client(f"{urls[server]}/mcp") as session:
            for _ in range(CALLS_PER_CLIENT):
                result = await session.call_tool("verify_maml", {"document": "x"})
                valid = bool((result.structured_content or {}).get("valid"))
                results[(server, bool(result.is_error), valid)] += 1
                proofs.append((result.meta or {})["macroslow-mcp/receipt"]["tlog_proof"])

    with anyio.fail_after(RUN_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for server in range(2):
                for _ in range(CLIENTS_PER_SERVER):
                    tg.start_soon(client, server)

    per_server = CLIENTS_PER_SERVER * CALLS_PER_CLIENT
    total = 2 * per_server
    # Every call answered (valid=false, not an error: its receipt was written before the answer).
    assert results == {(0, False, False): per_server, (1, False, False): per_server}

    for proc in procs:  # a clean shutdown signs a checkpoint of the final state
        proc.terminate()
    for i, proc in enumerate(procs):
        # A clean shutdown exits 0 (tests/server/test_shutdown.py).
        assert proc.wait(timeout=20) == 0
        log = (tmp_path / f"server-{i}.log").read_text()
        assert "shutdown complete: the services are closed" in log and "Traceback" not in log, log

    ledger = _ledger(postgres_url, tmp_path / "home")
    try:
        rows = [r for r, _ in ledger.rows()]
        assert _count(ledger) == total
        assert [r.seq for r in rows] == list(range(total))
        assert len({r.id for r in rows}) == total
        assert Counter(r.tool for r in rows) == {"verify_maml": total}
        assert Counter(r.principal for r in rows) == {
            "agent://server-0": per_server,
            "agent://server-1": per_server,
        }
        sizes = [cp.size for cp in ledger.checkpoints()]
        assert sizes == sorted(set(sizes)) and sizes[-1] == total
        _assert_verified(ledger.verify(), total, len(sizes), total)
        # Every answer carried a proof of its receipt that verifies offline against the log's key.
        keys = open_keys(_settings(tmp_path / "home"))
        public = keys.public_key(ledger.checkpoints()[-1].key_id)
        assert public is not None
        indices = {check_proof(text, public, ledger.origin).index for text in proofs}
        assert indices == set(range(total))
    finally:
        ledger.engine.dispose()


# -- a writer killed mid-stream ---------------------------------------------------------------------

CRASHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mcp_server.db import open_engine
    from mcp_server.home import open_keys
    from mcp_server.ledger.store import Draft, Ledger
    from mcp_server.settings import Settings

    home, url = sys.argv[1:3]
    settings = Settings(home=Path(home), _env_file=None)
    ledger = Ledger(open_engine(url, durable=True), open_keys(settings))
    draft = Draft(
        principal="agent://crasher", issuer="local", token_id=None, scopes="", tool="t",
        action=None, decision="allowed", reason=None, outcome="ok",
    )
    while True:
        seq = ledger.append(draft).seq
        sys.stdout.write(f"{seq}\\n")
        sys.stdout.flush()
    """
)


def _read_acks(proc: subprocess.Popen[bytes], wanted: int, deadline: float) -> bytes:
    """What the child printed, once it has acknowledged at least `wanted` receipts."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    while (lines := buffer.count(b"\n")) < wanted:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {lines} of {wanted} acks before the deadline"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                err = proc.stderr.read() if proc.stderr else b""
                pytest.fail(f"child exited ({proc.wait()}): {err.decode(errors='replace')}")
            buffer += chunk
    return buffer


@pytest.mark.parametrize("acks", [50, 300, 700])
def test_sigkill_loses_no_acknowledged_receipt(acks: int, tmp_path: Path) -> None:
    home = _home(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(home), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )
    try:
        printed = _read_acks(proc, acks, time.monotonic() + RUN_TIMEOUT)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert proc.stdout is not None
        printed += proc.stdout.read()  # acks still in the pipe when it died count too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    # Complete lines only: a line cut off by the kill was never an acknowledgement.
    acked = [int(line) for line in printed[: printed.rindex(b"\n")].split(b"\n")]
    assert len(acked) >= acks
    assert acked == list(range(len(acked)))  # one writer: it was given 0, 1, 2, ...

    ledger = _ledger(url, home)
    try:
        rows = _rows(ledger)
        stored = len(rows)
        # Every acknowledged receipt is there; at most the one in flight at the kill is beyond them.
        assert stored in (len(acked), len(acked) + 1)
        assert [seq for seq, _, _ in rows] == list(range(stored))
        assert set(acked) <= {seq for seq, _, _ in rows}
        assert len({rid for _, rid, _ in rows}) == stored
        assert ledger.size() == stored
        # Receipts and their checkpoint commit together: whatever is stored is covered.
        checkpoints = len(ledger.checkpoints())
        _assert_verified(ledger.verify(), stored, checkpoints, stored)

        # A fresh writer continues the same log.
        after = ledger.append(_draft("agent://after"))
        assert after.seq == stored
        assert ledger.get(after.id)[0].seq == stored
        _assert_verified(ledger.verify(), stored + 1, checkpoints + 1, stored + 1)
    finally:
        ledger.engine.dispose()


# -- PostgreSQL: the integrator killed mid-batch, a replica killed mid-call --------------------------

REPLICA = textwrap.dedent(
    """
    import base64, sys
    from pathlib import Path
    from mcp_server.db import open_engine
    from mcp_server.home import open_keys
    from mcp_server.ledger.store import Draft, Ledger
    from mcp_server.settings import Settings

    home, url, tag, wait = sys.argv[1:5]
    ledger = Ledger(
        open_engine(url, durable=True), open_keys(Settings(home=Path(home), _env_file=None)),
        batch_wait=float(wait),
    )
    draft = Draft(
        principal=f"agent://{tag}", issuer="local", token_id=None, scopes="", tool="t",
        action=None, decision="allowed", reason=None, outcome="ok",
    )
    while True:
        evidence = ledger.record(draft)
        proof = base64.b64encode(evidence.tlog_proof().encode()).decode()
        sys.stdout.write(f"{evidence.receipt.seq} {proof}\\n")
        sys.stdout.flush()
    """
)

HOLDER = """
    SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.classid = CAST(:ns AS oid) AND l.objid = CAST(:key AS oid)
"""


IN_BATCH = """
    SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slow' AND state = 'idle in transaction'
"""


def _replica(home: Path, url: str, tag: str, wait: float) -> subprocess.Popen[bytes]:
    named = f"{url}?application_name={tag}"
    return subprocess.Popen(
        [sys.executable, "-c", REPLICA, str(home), named, tag, str(wait)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )


def _kill(proc: subprocess.Popen[bytes], printed: bytes) -> list[tuple[int, str]]:
    """SIGKILL the process; the complete lines it printed: (seq, tlog proof) it acknowledged."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.stdout is not None
    printed += proc.stdout.read()
    lines = printed[: printed.rindex(b"\n")].split(b"\n") if b"\n" in printed else []
    return [(int(seq), base64.b64decode(proof).decode()) for seq, proof in (line.split() for line in lines)]


def test_integrator_killed_mid_batch_and_replica_killed_mid_call(postgres_url: str, tmp_path: Path) -> None:
    from sqlalchemy import text

    from mcp_server.ledger.integrate import RECOVERY_TOOL
    from mcp_server.ledger.sequencers import INTEGRATION_LOCK

    home = _home(tmp_path)
    setup = _ledger(postgres_url, home)  # the schema and the head
    # "slow" starts first, so it becomes the integrator; each of its batches takes a second.
    slow = _replica(home, postgres_url, "slow", 1.0)
    procs = [slow]
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        slow_out = _read_acks(slow, 2, deadline)
        fast = _replica(home, postgres_url, "fast", 0.0)
        procs.append(fast)
        fast_out = _read_acks(fast, 2, deadline)
        while True:  # "slow" holds the integration lock and is mid-batch: receipts taken, not committed
            with setup.engine.connect() as conn:
                ns, key = INTEGRATION_LOCK
                holder = conn.execute(text(HOLDER), {"ns": ns, "key": key}).scalar()
                open_batch = conn.execute(text(IN_BATCH)).scalar()
            if holder == "slow" and open_batch:
                break
            assert time.monotonic() < deadline, "the slow replica never held the lock"
            time.sleep(0.02)
        slow_acks = _kill(slow, slow_out)
        # The other replica takes over: it goes on being answered.
        fast_out += _read_acks(fast, 20, time.monotonic() + RUN_TIMEOUT)
        fast_acks = _kill(fast, fast_out)  # mid-call: it is always inside `record`
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    setup.close()
    setup.engine.dispose()

    ledger = _ledger(postgres_url, home)
    try:
        before = ledger.verify()
        assert before.ok and before.queued <= 1  # at most the call "fast" was in when killed
        ledger.recover()
        report = ledger.verify()
        _assert_verified(report, report.receipts, report.checkpoints, report.receipts)
        assert (report.uncovered, report.queued) == (0, 0)
        rows = {r.seq: r for r, _ in ledger.rows()}
        assert sorted(rows) == list(range(len(rows)))  # one contiguous log: it never forked
        public = open_keys(_settings(home)).public_key(ledger.checkpoints()[-1].key_id)
        assert public is not None
        for tag, acks in (("slow", slow_acks), ("fast", fast_acks)):
            assert acks, tag
            for seq, proof in acks:  # every answered call: stored, covered, and its proof verifies
                assert rows[seq].principal == f"agent://{tag}"
                assert check_proof(proof, public, ledger.origin).index == seq
        # Each was killed inside one call: at most one receipt of each was never answered. One that
        # was still queued when its writer died was integrated by the other behind a recovery
        # receipt, which names only receipts no caller was answered for.
        answered = {seq for seq, _ in slow_acks + fast_acks}
        unanswered = {
            tag: [s for s, r in rows.items() if r.principal == f"agent://{tag}" and s not in answered]
            for tag in ("slow", "fast")
        }
        assert len(unanswered["slow"]) <= 1 and len(unanswered["fast"]) <= 1, unanswered
        for recovery in (r for r in rows.values() if r.tool == RECOVERY_TOOL):
            for first, last in re.findall(r"receipts (\d+)\.\.(\d+)", recovery.reason or ""):
                named = set(range(int(first), int(last) + 1))
                assert named and not named & answered, (recovery.reason, answered)
    finally:
        ledger.close()
        ledger.engine.dispose()
