"""The ledger store: appends, checkpoints, proofs, and `verify` catching every kind of tampering
that someone with write access to the database could try."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from mcp_server.db import open_engine
from mcp_server.errors import InvalidDocument, SignatureInvalid
from mcp_server.home import initialize, open_keys
from mcp_server.ledger import merkle
from mcp_server.ledger.receipts import Receipt
from mcp_server.ledger.store import Draft, Ledger
from mcp_server.settings import Settings

RECEIPTS = 10


def draft(i: int, **changes: object) -> Draft:
    fields: dict[str, object] = {
        "principal": f"agent://user{i % 3}",
        "issuer": "local",
        "token_id": f"jti-{i}",
        "scopes": "maml:read",
        "tool": "verify_maml" if i % 2 else "sign_maml",
        "action": None if i % 2 else "write",
        "decision": "allowed" if i % 4 else "denied",
        "reason": None if i % 4 else "forbidden: no",
        "outcome": "ok" if i % 4 else "forbidden",
        "document_id": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
        "document_digest": "sha256:" + "ab" * 32,
        "arguments_digest": "sha256:" + "cd" * 32,
        "result_digest": "sha256:" + "ef" * 32,
        "backend_job_id": f"job-{i}",
        "duration_us": 1000 + i,
        "payload": None,
    }
    fields.update(changes)
    return Draft(**fields)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    initialize(s, example=False)
    return s


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    engine = open_engine(settings.database, durable=True)
    log = Ledger(engine, open_keys(settings))  # one append at a time: one checkpoint each
    for i in range(RECEIPTS):
        log.append(draft(i))
    log.checkpoint()
    yield log
    engine.dispose()


def sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def test_appends_are_contiguous_and_checkpointed(ledger: Ledger) -> None:
    report = ledger.verify()
    assert report.ok, report.problems
    assert (report.receipts, report.checkpoints, report.verified_size) == (10, 10, 10)
    assert (report.uncovered, report.queued) == (0, 0)
    assert [cp.size for cp in ledger.checkpoints()] == list(range(1, 11))
    seqs = [r.seq for r, _ in ledger.rows()]
    assert seqs == list(range(10))


def test_checkpoint_is_idempotent(ledger: Ledger) -> None:
    ledger.checkpoint()
    assert [cp.size for cp in ledger.checkpoints()] == list(range(1, 11))


EDITS = {
    "id": "'00000000-0000-0000-0000-000000000000'",
    "created_at": "'2020-01-01T00:00:00.000000Z'",
    "principal": "'agent://mallory'",
    "issuer": "'evil'",
    "token_id": "'jti-forged'",
    "scopes": "'maml:read maml:sign'",
    "tool": "'validate_maml'",
    "action": "'execute'",
    "decision": "'tampered'",
    "reason": "'fine'",
    "outcome": "'tampered'",
    "document_id": "NULL",
    "document_digest": "'sha256:00'",
    "arguments_digest": "'sha256:00'",
    "result_digest": "'sha256:00'",
    "backend_job_id": "'job-x'",
    "duration_us": "1",
    "payload": "'{}'",
    "attestation": """'{"counts_digest":"sha256:00"}'""",  # added where there was none
}


@pytest.mark.parametrize("field", sorted(EDITS))
@pytest.mark.parametrize("seq", [0, 5, 9])
def test_editing_any_field_of_any_receipt_is_detected(ledger: Ledger, field: str, seq: int) -> None:
    assert set(EDITS) | {"seq"} == set(Receipt.field_names())
    sql(ledger.engine, f"UPDATE receipts SET {field} = {EDITS[field]} WHERE seq = :seq", seq=seq)
    report = ledger.verify()
    assert not report.ok
    assert report.first_bad_seq == seq
    assert f"receipt {seq} does not match its leaf hash" in report.problems[0]


def test_editing_a_receipt_and_its_leaf_hash_breaks_the_signed_checkpoint(ledger: Ledger) -> None:
    """Someone who recomputes the leaf hash still cannot match the signed root."""
    receipt, _ = next(r for r in ledger.rows() if r[0].seq == 2)
    forged = Receipt(**{**receipt.__dict__, "principal": "agent://mallory"})
    leaf = merkle.leaf_hash(forged.leaf_bytes())
    sql(
        ledger.engine,
        "UPDATE receipts SET principal = 'agent://mallory', leaf_hash = :leaf WHERE seq = 2",
        leaf=leaf,
    )
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq is None
    assert any("do not match the signed checkpoint at size 3" in p for p in report.problems)


def test_deleting_a_middle_receipt_is_detected(ledger: Ledger) -> None:
    sql(ledger.engine, "DELETE FROM receipts WHERE seq = 5")
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 5
    assert "receipt 5 is missing" in report.problems[0]


def test_deleting_the_tail_after_a_checkpoint_is_detected(ledger: Ledger) -> None:
    sql(ledger.engine, "DELETE FROM receipts WHERE seq >= 8")
    sql(ledger.engine, "UPDATE ledger_head SET size = 8")  # even with the head made to agree
    report = ledger.verify()
    assert not report.ok
    assert any("log truncated: the signed checkpoint at size 10" in p for p in report.problems)


def test_deleting_the_tail_and_its_checkpoint_is_detected(ledger: Ledger) -> None:
    sql(ledger.engine, "DELETE FROM receipts WHERE seq >= 8")
    sql(ledger.engine, "DELETE FROM checkpoints WHERE size > 8")
    report = ledger.verify()
    assert not report.ok
    assert any("checkpoints missing" in p for p in report.problems)


def test_reordering_receipts_is_detected(ledger: Ledger) -> None:
    sql(ledger.engine, "UPDATE receipts SET seq = 100 WHERE seq = 3")
    sql(ledger.engine, "UPDATE receipts SET seq = 3 WHERE seq = 6")
    sql(ledger.engine, "UPDATE receipts SET seq = 6 WHERE seq = 100")
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 3


def test_reordering_with_recomputed_leaves_breaks_the_checkpoint(ledger: Ledger) -> None:
    """Swap two receipts' contents, recomputing their leaf hashes with their new seqs."""
    rows = {r.seq: r for r, _ in ledger.rows()}
    for seq, other in ((1, 2), (2, 1)):
        moved = Receipt(**{**rows[other].__dict__, "seq": seq})
        sql(
            ledger.engine,
            "UPDATE receipts SET id = :id, tool = :tool, principal = :p, token_id = :t, "
            "leaf_hash = :leaf WHERE seq = :seq",
            id=f"tmp-{seq}" if seq == 1 else moved.id,
            tool=moved.tool,
            p=moved.principal,
            t=moved.token_id,
            leaf=b"",
            seq=seq,
        )
    report = ledger.verify()
    assert not report.ok


def test_forged_checkpoint_is_detected(ledger: Ledger) -> None:
    note = ledger.checkpoints()[0].note
    forged = note.replace("\n4\n", "\n3\n", 1)
    sql(ledger.engine, "UPDATE checkpoints SET note = :note WHERE size = 4", note=forged)
    report = ledger.verify()
    assert not report.ok
    assert report.problems[0].startswith("checkpoint at size 4:")


def test_checkpoint_by_an_untrusted_key_is_refused(ledger: Ledger, settings: Settings) -> None:
    keys = open_keys(settings)
    key_id = ledger.log_key_id  # the log's ML-DSA-44 key, not the home's default key
    assert key_id is not None and key_id != keys.default_key_id()
    keys.trust.remove(key_id)
    report = ledger.verify()
    assert not report.ok
    assert all("untrusted key" in p for p in report.problems[:3])


def test_inclusion_proofs_verify_and_corruptions_do_not(ledger: Ledger) -> None:
    for receipt, _ in ledger.rows():
        proof = ledger.prove(receipt.id)
        assert proof["tree_size"] == 10 and proof["seq"] == receipt.seq
        leaf, root = bytes.fromhex(proof["leaf_hash"]), bytes.fromhex(proof["root"])
        nodes = [bytes.fromhex(h) for h in proof["proof"]]
        merkle.verify_inclusion(leaf, receipt.seq, 10, nodes, root)
        bad_cases = [
            (leaf, receipt.seq + 1, 10, nodes, root),  # wrong index
            (leaf, receipt.seq, 10, nodes, merkle.leaf_hash(b"x")),  # wrong root
            (leaf, receipt.seq, 10, [*nodes, nodes[0]], root),  # extra node
            (leaf, receipt.seq, 10, nodes[:-1], root),  # missing node
            (leaf, receipt.seq, 10, [bytes([nodes[0][0] ^ 1]) + nodes[0][1:], *nodes[1:]], root),  # bit
        ]
        for case in bad_cases:
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(*case)


def test_proof_of_an_edited_receipt_is_refused(ledger: Ledger) -> None:
    receipt = next(r for r, _ in ledger.rows() if r.seq == 7)
    sql(ledger.engine, "UPDATE receipts SET outcome = 'forged' WHERE seq = 7")
    with pytest.raises(SignatureInvalid, match="does not match its leaf hash"):
        ledger.prove(receipt.id)


def test_a_recorded_receipt_comes_back_with_its_proof_in_the_covering_checkpoint(
    ledger: Ledger, settings: Settings
) -> None:
    from mcp_server.ledger.proofs import check_proof

    evidence = ledger.record(draft(99))
    assert evidence.receipt.seq == 10 and evidence.checkpoint.size == 11
    assert ledger.latest_checkpoint() == evidence.checkpoint
    keys = open_keys(settings)
    public = keys.public_key(evidence.checkpoint.key_id)
    assert public is not None
    checked = check_proof(evidence.tlog_proof(), public, ledger.origin)
    assert checked.index == 10 and checked.receipt["id"] == evidence.receipt.id
    merkle.verify_inclusion(evidence.leaf_hash, 10, 11, evidence.proof, evidence.checkpoint.root)


def test_consistency_proofs_between_checkpoints(ledger: Ledger) -> None:
    cps = ledger.checkpoints()
    for old in cps:
        for new in cps:
            if old.size <= new.size:
                proof = ledger.consistency(old.size, new.size)
                merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)


def test_pages_are_stable_while_receipts_are_appended(ledger: Ledger) -> None:
    first = ledger.page(limit=4)
    assert [r.seq for r, _ in first.receipts] == [9, 8, 7, 6] and first.next_cursor
    for i in range(5):
        ledger.append(draft(100 + i))
    second = ledger.page(limit=4, cursor=first.next_cursor)
    assert [r.seq for r, _ in second.receipts] == [5, 4, 3, 2]
    third = ledger.page(limit=4, cursor=second.next_cursor)
    assert [r.seq for r, _ in third.receipts] == [1, 0] and third.next_cursor is None


def test_page_filters(ledger: Ledger) -> None:
    assert {r.principal for r, _ in ledger.page(principal="agent://user1").receipts} == {"agent://user1"}
    assert {r.tool for r, _ in ledger.page(tool="sign_maml").receipts} == {"sign_maml"}
    assert [r.seq for r, _ in ledger.page(decision="denied").receipts] == [8, 4, 0]
    all_times = sorted(r.created_at for r, _ in ledger.page(limit=100).receipts)
    middle = all_times[5]
    assert len(ledger.page(since=middle, limit=100).receipts) == 5
    assert len(ledger.page(until=middle, limit=100).receipts) == 5
    with pytest.raises(InvalidDocument, match="cursor"):
        ledger.page(cursor="not-a-cursor")


def test_no_update_or_delete_path() -> None:
    """The store offers appends and reads only."""
    public = {name for name in dir(Ledger) if not name.startswith("_")}
    assert not {n for n in public if any(w in n for w in ("update", "delete", "remove", "edit", "set"))}


def test_ledger_reopens_with_the_same_origin(ledger: Ledger, settings: Settings) -> None:
    again = Ledger(open_engine(settings.database, durable=True), open_keys(settings))
    assert again.origin == ledger.origin and again.origin.startswith("macroslow-mcp/receipts/")
    assert again.append(draft(50)).seq == 10
    again.engine.dispose()


def test_group_commit_batches_concurrent_appends(settings: Settings) -> None:
    """16 threads x 25 appends in one process: contiguous, each caller gets its own receipts back,
    one checkpoint per batch, and fewer commits than appends (calls shared a flush and a signature)."""
    import threading

    from sqlalchemy import event

    engine = open_engine(settings.database, durable=True)
    log = Ledger(engine, open_keys(settings))
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    got: dict[int, list[Receipt]] = {}
    barrier = threading.Barrier(16)

    def work(worker: int) -> None:
        barrier.wait()
        got[worker] = [log.append(draft(worker * 100 + i, principal=f"agent://w{worker}")) for i in range(25)]

    threads = [threading.Thread(target=work, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = sorted(r.seq for rs in got.values() for r in rs)
    assert seqs == list(range(400))
    for worker, receipts in got.items():
        assert all(r.principal == f"agent://w{worker}" for r in receipts)
        stored = {r.seq: r for r, _ in log.rows()}
        assert all(stored[r.seq] == r for r in receipts)
    sizes = [cp.size for cp in log.checkpoints()]
    assert sizes == sorted(set(sizes)) and sizes[-1] == 400
    assert len(sizes) == len(commits) < 400
    report = log.verify()
    assert report.ok and report.verified_size == 400
    engine.dispose()


def test_a_failed_batch_fails_its_calls_and_the_log_goes_on(ledger: Ledger) -> None:
    from mcp_server.errors import BackendUnavailable

    sql(ledger.engine, "ALTER TABLE receipts RENAME TO receipts_away")
    with pytest.raises(BackendUnavailable):
        ledger.append(draft(1))
    sql(ledger.engine, "ALTER TABLE receipts_away RENAME TO receipts")
    assert ledger.append(draft(2)).seq == RECEIPTS
    assert ledger.verify().problems == []
