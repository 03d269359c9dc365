"""The log and our witness (`macroslow-mcp witness serve`'s service) against each other over loopback
HTTP: cosignatures collected and kept, the quorum checked, strict and default modes, a witness that
is down, and a forked log refused by the witness and reported by the log."""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select, text

from mcp_server.db import open_engine
from mcp_server.errors import BackendUnavailable
from mcp_server.home import initialize, open_keys
from mcp_server.ledger import merkle
from mcp_server.ledger.models import CosignatureRow
from mcp_server.ledger.proofs import check_proof
from mcp_server.ledger.receipts import Receipt
from mcp_server.ledger.store import Draft, Ledger
from mcp_server.settings import Settings
from mcp_server.witness import cosignature
from mcp_server.witness import policy as policies
from mcp_server.witness.service import build_app, load_config, open_service

pytestmark = [pytest.mark.subprocess]


def draft(i: int) -> Draft:
    return Draft(
        principal=f"agent://u{i}",
        issuer="local",
        token_id=None,
        scopes="",
        tool="verify_maml",
        action="read",
        decision="allowed",
        reason=None,
        outcome="ok",
    )


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningWitness:
    name: str
    url: str
    vkey: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def home(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    initialize(settings, example=False)
    return settings


@pytest.fixture
def log_vkey(home: Settings) -> tuple[str, str]:
    """The log's origin and vkey (opening the ledger once makes its ML-DSA-44 key)."""
    ledger = Ledger(open_engine(home.database, durable=True), open_keys(home))
    keys = ledger.keys
    assert keys is not None and ledger.log_key_id is not None
    public = keys.public_key(ledger.log_key_id)
    assert public is not None
    origin, vkey = ledger.origin, cosignature.vkey(ledger.origin, public)
    ledger.engine.dispose()
    return origin, vkey


@pytest.fixture
def witnesses(tmp_path: Path, log_vkey: tuple[str, str]) -> Iterator[Callable[[int], list[RunningWitness]]]:
    running: list[RunningWitness] = []

    def start(count: int) -> list[RunningWitness]:
        for i in range(count):
            where = tmp_path / f"witness-{i}"
            where.mkdir()
            name = f"witness.test/w{i}"
            (where / "witness.toml").write_text(
                f'name = "{name}"\nkey_file = "w.key.pem"\n[[log]]\nvkey = "{log_vkey[1]}"\n'
            )
            service = open_service(load_config(where / "witness.toml"))
            port = _port()
            config = uvicorn.Config(build_app(service), host="127.0.0.1", port=port, log_level="warning")
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 20
            while not server.started:
                assert time.monotonic() < deadline, "witness did not start"
                time.sleep(0.02)
            running.append(RunningWitness(name, f"http://127.0.0.1:{port}", service.vkey(), server, thread))
        return running

    yield start
    for witness in running:
        witness.stop()


def write_policy(path: Path, log_vkey: str, running: list[RunningWitness], quorum: int) -> policies.Policy:
    lines = [f"log {log_vkey}"]
    for i, w in enumerate(running):
        lines.append(f"witness w{i} {w.vkey} {w.url}")
    lines.append(f"group g {quorum} " + " ".join(f"w{i}" for i in range(len(running))))
    lines.append("quorum g")
    path.write_text("\n".join(lines) + "\n")
    return policies.parse(path.read_bytes())


def open_ledger(home: Settings, policy: policies.Policy, *, strict: bool, timeout: float = 5.0) -> Ledger:
    return Ledger(
        open_engine(home.database, durable=True),
        open_keys(home),
        witnesses=policy,
        witness_strict=strict,
        witness_timeout=timeout,
    )


def cosigners(ledger: Ledger, size: int) -> set[str]:
    with ledger.engine.connect() as conn:
        return set(conn.execute(select(CosignatureRow.witness).where(CosignatureRow.size == size)).scalars())


def test_strict_mode_answers_with_the_quorum_cosigned_checkpoint(
    home: Settings,
    log_vkey: tuple[str, str],
    witnesses: Callable[[int], list[RunningWitness]],
    tmp_path: Path,
) -> None:
    origin, vkey = log_vkey
    running = witnesses(2)
    policy = write_policy(tmp_path / "policy", vkey, running, 2)
    ledger = open_ledger(home, policy, strict=True)
    try:
        for i in range(4):  # the first from size 0, then with consistency proofs
            evidence = ledger.record(draft(i))
            policy.check(evidence.checkpoint.note, origin)  # the quorum cosigned what the caller got
            checked = check_proof(
                evidence.tlog_proof(), open_keys(home).public_key(ledger.log_key_id or ""), origin
            )  # type: ignore[arg-type]
            assert checked.index == i
            assert cosigners(ledger, evidence.checkpoint.size) == {"w0", "w1"}
    finally:
        ledger.close()
        ledger.engine.dispose()


def test_default_mode_answers_at_once_and_witnesses_cosign_behind(
    home: Settings,
    log_vkey: tuple[str, str],
    witnesses: Callable[[int], list[RunningWitness]],
    tmp_path: Path,
) -> None:
    origin, vkey = log_vkey
    running = witnesses(2)
    policy = write_policy(tmp_path / "policy", vkey, running, 2)
    ledger = open_ledger(home, policy, strict=False)
    try:
        evidence = [ledger.record(draft(i)) for i in range(5)]
        with pytest.raises(Exception, match="quorum"):
            policy.check(evidence[-1].checkpoint.note, origin)  # answered before any witness cosigned
        deadline = time.monotonic() + 20
        while cosigners(ledger, evidence[-1].checkpoint.size) != {"w0", "w1"}:
            assert time.monotonic() < deadline, "witnesses did not cosign the newest checkpoint"
            time.sleep(0.05)
    finally:
        ledger.close()
        ledger.engine.dispose()


def test_a_witness_down_blocks_strict_answers_and_delays_nothing_by_default(
    home: Settings,
    log_vkey: tuple[str, str],
    witnesses: Callable[[int], list[RunningWitness]],
    tmp_path: Path,
) -> None:
    _, vkey = log_vkey
    running = witnesses(2)
    policy = write_policy(tmp_path / "policy", vkey, running, 2)
    running[1].stop()
    strict = open_ledger(home, policy, strict=True, timeout=1.0)
    try:
        with pytest.raises(BackendUnavailable, match="witness quorum did not cosign"):
            strict.record(draft(0))
    finally:
        strict.close()
        strict.engine.dispose()
    relaxed = open_ledger(home, policy, strict=False, timeout=1.0)
    try:
        started = time.perf_counter()
        for i in range(5):
            relaxed.record(draft(i))
        assert time.perf_counter() - started < 1.0  # five answers, no witness wait in them
    finally:
        relaxed.close()
        relaxed.engine.dispose()


def test_a_forked_log_is_refused_by_the_witness_and_reported(
    home: Settings,
    log_vkey: tuple[str, str],
    witnesses: Callable[[int], list[RunningWitness]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two trees of the same history length with different contents: the copy's history differs at
    receipt 1, and the witness that cosigned the original refuses the copy's next checkpoint (422)."""
    _, vkey = log_vkey
    running = witnesses(1)
    policy = write_policy(tmp_path / "policy", vkey, running, 1)
    ledger = open_ledger(home, policy, strict=True)
    for i in range(3):
        ledger.record(draft(i))
    ledger.close()
    ledger.engine.dispose()

    database = Path(home.database.removeprefix("sqlite:///"))
    fork_home = tmp_path / "fork"
    shutil.copytree(home.home, fork_home)
    forked = Settings(home=fork_home, _env_file=None)  # type: ignore[call-arg]
    engine = open_engine(forked.database, durable=True)
    assert database.exists() and Path(forked.database.removeprefix("sqlite:///")).exists()
    rows = []
    with engine.connect() as conn:  # rewrite receipt 1 consistently: leaf hashes and head recomputed
        for row in conn.execute(text("SELECT * FROM receipts ORDER BY seq")).mappings():
            rows.append(Receipt(**{k: row[k] for k in Receipt.field_names()}))
    rows[1] = Receipt(**{**rows[1].__dict__, "outcome": "forged"})
    frontier = merkle.Frontier()
    with engine.begin() as conn:
        for receipt in rows:
            leaf = merkle.leaf_hash(receipt.leaf_bytes())
            conn.execute(
                text("UPDATE receipts SET outcome = :o, leaf_hash = :l WHERE seq = :s"),
                {"o": receipt.outcome, "l": leaf, "s": receipt.seq},
            )
            frontier.append(leaf)
        conn.execute(text("UPDATE ledger_head SET frontier = :f"), {"f": frontier.to_bytes()})
        conn.execute(text("DELETE FROM checkpoints"))
        conn.execute(text("DELETE FROM checkpoint_cosignatures"))
        conn.execute(text("UPDATE ledger_head SET checkpoint_size = 0"))
    engine.dispose()
    fork = open_ledger(forked, policy, strict=True)
    caplog.set_level(logging.ERROR, logger="mcp_server.ledger.witnessing")
    try:
        with pytest.raises(BackendUnavailable, match="witness quorum did not cosign"):
            fork.record(draft(9))
    finally:
        fork.close()
        fork.engine.dispose()
    refused = [r.getMessage() for r in caplog.records if r.name == "mcp_server.ledger.witnessing"]
    assert refused and "422" in refused[0], refused


def test_the_cli_checks_the_quorum_of_a_policy(
    home: Settings,
    log_vkey: tuple[str, str],
    witnesses: Callable[[int], list[RunningWitness]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`receipts check-proof --policy` and `receipts verify --policy` hold a proof and the log to the
    quorum: met with the two witnesses' cosignatures, not met with a policy asking for a third."""
    import os

    from tests.test_cli import run

    _, vkey = log_vkey
    running = witnesses(2)
    policy = write_policy(tmp_path / "policy", vkey, running, 2)
    ledger = open_ledger(home, policy, strict=True)
    try:
        evidence = ledger.record(draft(0))
    finally:
        ledger.close()
        ledger.engine.dispose()
    (tmp_path / "r.tlog-proof").write_text(evidence.tlog_proof())
    # A stricter policy: a third witness that never cosigned, all three required.
    third = cosignature.vkey("witness.test/absent", open_service_key(tmp_path))
    stricter = (
        (tmp_path / "policy")
        .read_text()
        .replace("group g 2 w0 w1", f"witness w2 {third}\ngroup g 3 w0 w1 w2")
    )
    (tmp_path / "stricter").write_text(stricter)

    for name in list(os.environ):
        if name.startswith("MACROSLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MACROSLOW_HOME", str(home.home))
    proof = str(tmp_path / "r.tlog-proof")
    assert run(capsys, "receipts", "check-proof", proof, "--policy", str(tmp_path / "policy"))[0] == 0
    code, _, err = run(capsys, "receipts", "check-proof", proof, "--policy", str(tmp_path / "stricter"))
    assert code == 1 and "quorum" in err
    assert run(capsys, "receipts", "verify", "--policy", str(tmp_path / "policy"))[0] == 0
    code, out, _ = run(capsys, "receipts", "verify", "--policy", str(tmp_path / "stricter"))
    assert code == 1 and "does not meet the witness policy" in out


def open_service_key(tmp_path: Path) -> object:
    from mcp_server.witness.service import load_or_create_key

    return load_or_create_key(tmp_path / "absent.key.pem").public_key()


@pytest.mark.anyio
async def test_the_server_in_strict_mode_answers_cosigned_and_verify_receipt_says_so(
    home: Settings,
    log_vkey: tuple[str, str],
    witnesses: Callable[[int], list[RunningWitness]],
    tmp_path: Path,
) -> None:
    from mcp.client import Client

    from mcp_server.server import build_server

    origin, vkey = log_vkey
    running = witnesses(2)
    policy = write_policy(tmp_path / "policy", vkey, running, 2)
    settings = home.model_copy(update={"witness_policy": tmp_path / "policy", "witness_mode": "strict"})
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("verify_maml", {"document": "x"})
        receipt = (result.meta or {})["macroslow-mcp/receipt"]
        proof = await client.call_tool("verify_receipt", {"receipt_id": receipt["id"]})
    note = receipt["tlog_proof"].split("\n\n", 1)[1]
    policy.check(note, origin)  # the caller's proof carries the quorum's cosignatures
    assert not proof.is_error and proof.structured_content is not None
    assert (
        proof.structured_content["witnessed"] is True and proof.structured_content["witness_problem"] is None
    )


def test_a_third_party_with_only_the_policy_verifies_a_receipt_end_to_end(
    home: Settings,
    log_vkey: tuple[str, str],
    witnesses: Callable[[int], list[RunningWitness]],
    tmp_path: Path,
) -> None:
    """docs/receipts.md's stand-alone script (cryptography and the standard library only), given a
    proof and the policy file (the log's and witnesses' vkeys, the quorum) and nothing else: accepts
    a strict-mode proof, refuses one the quorum did not cosign and one under a stricter policy."""
    import subprocess
    import sys

    from tests.test_docs_examples import BY_ID

    _, vkey = log_vkey
    running = witnesses(2)
    policy = write_policy(tmp_path / "policy", vkey, running, 2)
    strict = open_ledger(home, policy, strict=True)
    try:
        cosigned = strict.record(draft(0)).tlog_proof()
    finally:
        strict.close()
        strict.engine.dispose()
    relaxed = Ledger(open_engine(home.database, durable=True), open_keys(home))  # no witnesses
    try:
        alone = relaxed.record(draft(1)).tlog_proof()
    finally:
        relaxed.engine.dispose()
    (tmp_path / "cosigned.tlog-proof").write_text(cosigned)
    (tmp_path / "alone.tlog-proof").write_text(alone)
    (tmp_path / "one-of-one").write_text(
        f"log {vkey}\nwitness w0 {running[0].vkey}\nquorum w0\n"  # holds: w0 cosigned
    )
    third = cosignature.vkey("witness.test/absent", open_service_key(tmp_path))
    (tmp_path / "stricter").write_text(
        (tmp_path / "policy")
        .read_text()
        .replace("group g 2 w0 w1", f"witness w2 {third}\ngroup g 3 w0 w1 w2")
    )
    script = tmp_path / "check_tlog_proof.py"
    script.write_text(BY_ID["check-tlog-proof-script"].body)

    def run(proof: str, policy_file: str) -> subprocess.CompletedProcess[str]:
        args = [
            sys.executable,
            "-I",
            str(script),
            str(tmp_path / proof),
            "--policy",
            str(tmp_path / policy_file),
        ]
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    ok = run("cosigned.tlog-proof", "policy")
    assert ok.returncode == 0 and ok.stdout.startswith("proof ok: receipt 0"), ok.stderr
    assert run("cosigned.tlog-proof", "one-of-one").returncode == 0
    refused = run("alone.tlog-proof", "policy")
    assert refused.returncode == 1 and "quorum" in refused.stderr
    stricter = run("cosigned.tlog-proof", "stricter")
    assert stricter.returncode == 1 and "quorum" in stricter.stderr
