"""Receipt proofs in the C2SP tlog-proof format (`mcp_server.ledger.proofs`) and the CLI around them.

The library tests build logs by hand (receipts, `merkle`, `sign_checkpoint` with seeded keys), so
every tampering can be aimed exactly; the CLI tests use a real ledger in a temporary home.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mcp_server.crypto import mldsa
from mcp_server.crypto.keys import public_pem
from mcp_server.db import open_engine
from mcp_server.errors import SignatureInvalid
from mcp_server.home import initialize, open_keys
from mcp_server.ledger.checkpoint import MAX_NOTE_BYTES, Checkpoint, sign_checkpoint
from mcp_server.ledger.merkle import HASH_SIZE, inclusion_proof, leaf_hash, root_from_leaf_hashes
from mcp_server.ledger.proofs import (
    MAGIC,
    MAX_EXTRA_BYTES,
    MAX_HASHES,
    MAX_PROOF_BYTES,
    TlogProof,
    check_proof,
    format_proof,
    parse_proof,
    receipt_proof,
    signing_key,
)
from mcp_server.ledger.receipts import Draft, Receipt
from mcp_server.ledger.store import Ledger
from mcp_server.settings import Settings
from tests.test_cli import run

Algorithm = mldsa.Algorithm
ORIGIN = "macroslow-mcp/receipts/5a1e0b7c-3d2f-4e6a-9b8c-7d6e5f4a3b2c"
KEY = mldsa.from_seed(Algorithm.ML_DSA_65, b"\x11" * 32)
OTHER_KEY = mldsa.from_seed(Algorithm.ML_DSA_65, b"\x22" * 32)
SMALL_KEY = mldsa.from_seed(Algorithm.ML_DSA_44, b"\x33" * 32)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_receipt(seq: int, **changes: object) -> Receipt:
    fields: dict[str, object] = {
        "seq": seq,
        "id": f"00000000-0000-4000-8000-{seq:012d}",
        "created_at": "2025-01-01T00:00:00.000000Z",
        "principal": f"agent://u{seq}",
        "issuer": "local",
        "token_id": None,
        "scopes": "maml:read",
        "tool": "verify_maml",
        "action": "read",
        "decision": "allowed",
        "reason": None,
        "outcome": "ok",
        "document_id": None,
        "document_digest": None,
        "arguments_digest": None,
        "result_digest": None,
        "backend_job_id": None,
        "duration_us": seq,
        "payload": None,
    }
    return Receipt(**{**fields, **changes})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Log:
    """A log of the given leaf bytes and its signed checkpoint, made without the ledger."""

    leaves: tuple[bytes, ...]
    note: str

    def path(self, index: int) -> list[bytes]:
        return inclusion_proof([leaf_hash(b) for b in self.leaves], index, len(self.leaves))

    def proof(self, index: int) -> str:
        return format_proof(index, self.path(index), self.note, extra=self.leaves[index])


def make_log(
    leaves: list[bytes], key: mldsa.PrivateKey = KEY, origin: str = ORIGIN, name: str | None = None
) -> Log:
    root = root_from_leaf_hashes([leaf_hash(b) for b in leaves])
    note = sign_checkpoint(Checkpoint(origin, len(leaves), root), name or origin, key)
    return Log(tuple(leaves), note)


RECEIPTS = [make_receipt(i) for i in range(7)]
LOG = make_log([r.leaf_bytes() for r in RECEIPTS])
PROOF = LOG.proof(3)  # entry 3 of 7: a path of three hashes
PUBLIC = KEY.public_key()


def lines_of(text: str) -> list[str]:
    return text.split("\n")


def joined(lines: list[str]) -> str:
    return "\n".join(lines)


def refused(text: str | bytes, match: str) -> None:
    with pytest.raises(SignatureInvalid, match=match):
        parse_proof(text)


def not_proved(
    text: str | bytes | TlogProof, match: str, key: mldsa.PublicKey = PUBLIC, name: str = ORIGIN
) -> None:
    with pytest.raises(SignatureInvalid, match=match):
        check_proof(text, key, name)


# -- the format ---------------------------------------------------------------------------------------


def test_layout_is_tlog_proof() -> None:
    path = LOG.path(3)
    assert len(path) == 3
    expected = (
        "c2sp.org/tlog-proof@v1\n"
        f"extra {b64(RECEIPTS[3].leaf_bytes())}\n"
        "index 3\n" + "".join(b64(h) + "\n" for h in path) + "\n" + LOG.note
    )
    assert expected == PROOF
    assert receipt_proof(RECEIPTS[3], path, LOG.note) == PROOF


def test_round_trip() -> None:
    for extra in (None, b"", b"\x00\xff", RECEIPTS[0].leaf_bytes()):
        for index, hashes in (
            (0, []),
            (5, [bytes([n]) * 32 for n in range(5)]),
            (2**64 - 1, [bytes(32)] * 64),
        ):
            text = format_proof(index, hashes, LOG.note, extra=extra)
            assert parse_proof(text) == TlogProof(index, tuple(hashes), LOG.note, extra)
            assert parse_proof(text.encode()) == parse_proof(text)
    assert "extra" not in format_proof(0, [], LOG.note)


def test_every_entry_of_trees_of_every_size_checks() -> None:
    for size in range(1, 10):
        receipts = [make_receipt(i) for i in range(size)]
        log = make_log([r.leaf_bytes() for r in receipts])
        for index, receipt in enumerate(receipts):
            checked = check_proof(log.proof(index), PUBLIC, ORIGIN)
            assert checked.index == index
            assert checked.receipt == receipt.content()
            assert (checked.checkpoint.origin, checked.checkpoint.size) == (ORIGIN, size)
    assert len(make_log([RECEIPTS[0].leaf_bytes()]).path(0)) == 0  # a tree of one: no hashes


def test_check_takes_text_bytes_or_a_parsed_proof() -> None:
    for given_proof in (PROOF, PROOF.encode(), parse_proof(PROOF)):
        assert check_proof(given_proof, PUBLIC, ORIGIN).receipt["id"] == RECEIPTS[3].id


def test_other_parameter_sets() -> None:
    log = make_log([r.leaf_bytes() for r in RECEIPTS], key=SMALL_KEY)
    assert check_proof(log.proof(6), SMALL_KEY.public_key(), ORIGIN).index == 6
    not_proved(log.proof(6), "no signature by")


def test_witness_cosignature_lines_are_ignored() -> None:
    witness = sign_checkpoint(
        Checkpoint(ORIGIN, 7, root_from_leaf_hashes([leaf_hash(b) for b in LOG.leaves])),
        "witness.example",
        OTHER_KEY,
    )
    cosigned = LOG.note + witness[witness.rindex("\n\n") + 2 :]
    text = format_proof(3, LOG.path(3), cosigned, extra=LOG.leaves[3])
    assert check_proof(text, PUBLIC, ORIGIN).index == 3


# -- strict reading -----------------------------------------------------------------------------------

HEAD = lines_of(PROOF)[:6]  # magic, extra, index, three hashes
NOTE = LOG.note


def with_head(*lines: str) -> str:
    return joined(list(lines)) + "\n\n" + NOTE


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (with_head("c2sp.org/tlog-proof@v2", *HEAD[1:]), "does not start with"),
        (with_head("c2sp.org/tlog-proof@v1 ", *HEAD[1:]), "does not start with"),
        (with_head("C2SP.org/tlog-proof@v1", *HEAD[1:]), "does not start with"),
        ("\ufeff" + PROOF, "does not start with"),
        (PROOF.replace("\n", "\r\n"), "no empty line"),
        (joined(HEAD) + "\n" + NOTE, "line 7 .* 32-byte hash"),  # the note's lines read as hashes
        (joined(HEAD), "no empty line"),
        ("", "no empty line"),
        (with_head(MAGIC, *HEAD[2:], HEAD[1]), "line 6 .* not the standard base64"),  # extra after index
        (with_head(*HEAD[:2], *HEAD[3:]), "line 3 must be 'index <n>'"),
        (with_head(*HEAD[:2]), "line 3 must be 'index <n>'"),
        (with_head(HEAD[0], "extra", *HEAD[2:]), "line 2 must be 'index <n>'"),
        (with_head(HEAD[0], "Extra " + HEAD[1][6:], *HEAD[2:]), "line 2 must be 'index <n>'"),
        (with_head(HEAD[0], "extra  " + HEAD[1][6:], *HEAD[2:]), "extra data .* not canonical"),
        (with_head(HEAD[0], HEAD[1] + " ", *HEAD[2:]), "extra data .* not canonical"),
        (with_head(HEAD[0], "extra QR==", *HEAD[2:]), "extra data .* not canonical"),  # "Q" is canonical
        (with_head(HEAD[0], "extra QQ", *HEAD[2:]), "extra data .* not canonical"),  # padding left out
        (with_head(HEAD[0], "extra -_-_", *HEAD[2:]), "extra data .* not canonical"),  # URL-safe alphabet
        (with_head(HEAD[0], HEAD[1], "index", *HEAD[3:]), "line 3 must be 'index <n>'"),
        (with_head(HEAD[0], HEAD[1], "index 03", *HEAD[3:]), "not a decimal without leading zeros"),
        (with_head(HEAD[0], HEAD[1], "index +3", *HEAD[3:]), "not a decimal"),
        (with_head(HEAD[0], HEAD[1], "index -3", *HEAD[3:]), "not a decimal"),
        (with_head(HEAD[0], HEAD[1], "index  3", *HEAD[3:]), "not a decimal"),
        (with_head(HEAD[0], HEAD[1], "index 3 ", *HEAD[3:]), "not a decimal"),
        (with_head(HEAD[0], HEAD[1], "index 3.0", *HEAD[3:]), "not a decimal"),
        (with_head(HEAD[0], HEAD[1], "index \u0663", *HEAD[3:]), "not a decimal"),  # ARABIC-INDIC THREE
        (with_head(HEAD[0], HEAD[1], "index 0x3", *HEAD[3:]), "not a decimal"),
        (with_head(HEAD[0], HEAD[1], f"index {2**64}", *HEAD[3:]), "beyond 2\\^64-1"),
        (with_head(HEAD[0], HEAD[1], "index " + "9" * 5000, *HEAD[3:]), "beyond 2\\^64-1"),
        (with_head(*HEAD[:3], b64(bytes(31))), "line 4 .* 32-byte hash"),
        (with_head(*HEAD[:3], b64(bytes(33))), "line 4 .* 32-byte hash"),
        (with_head(*HEAD[:4], HEAD[4].rstrip("=")), "line 5 .* 32-byte hash"),
        (with_head(*HEAD[:4], base64.urlsafe_b64encode(b"\xfb" * 32).decode()), "line 5 .* 32-byte hash"),
        (with_head(*HEAD[:4], HEAD[4][:-2] + "B="), "line 5 .* 32-byte hash"),  # non-zero padding bits
        (with_head(*HEAD[:4], " " + HEAD[4]), "line 5 .* 32-byte hash"),
        (with_head(*HEAD[:3], *[b64(bytes(32))] * (MAX_HASHES + 1)), "65 hashes; .* at most 64"),
        (joined(HEAD) + "\n\n", "checkpoint: note does not end with a newline|checkpoint: note has no blank"),
        (joined(HEAD) + "\n\n" + NOTE[: NOTE.rindex("\n\n") + 1], "checkpoint: note has no blank line"),
        (joined(HEAD) + "\n\n" + NOTE[:-1], "checkpoint: note does not end with a newline"),
        (joined(HEAD) + "\n\n" + NOTE + "\n", "empty line in its text"),
        (joined(HEAD) + "\n\n" + NOTE.replace("\n", "\r\n"), "checkpoint: note contains control character"),
        (
            joined(HEAD) + "\n\n" + NOTE.replace("\u2014 ", "- "),
            "checkpoint: signature line 1 does not start",
        ),
        (PROOF + "trailing\n", "checkpoint: signature line 2"),
    ],
)
def test_strict_reading(text: str, match: str) -> None:
    refused(text, match)


def test_the_checkpoint_has_one_empty_line() -> None:
    """An empty line ends the proof's hashes: one among them would put the rest into the checkpoint,
    whose text (tlog-checkpoint lines) has no empty line."""
    refused(joined(HEAD[:4]) + "\n\n" + joined(HEAD[4:]) + "\n\n" + NOTE, "empty line in its text")
    refused(joined(HEAD) + "\n\n\n" + NOTE, "empty line in its text")
    refused(joined(HEAD) + "\n\n" + NOTE.replace("\n", "\n\n", 1), "empty line in its text")


def test_size_limits() -> None:
    assert MAX_EXTRA_BYTES == MAX_NOTE_BYTES
    biggest = format_proof(2**64 - 1, [bytes(32)] * MAX_HASHES, NOTE, extra=bytes(MAX_EXTRA_BYTES))
    assert parse_proof(biggest).extra == bytes(MAX_EXTRA_BYTES)
    assert len(biggest) - len(NOTE) + MAX_NOTE_BYTES <= MAX_PROOF_BYTES  # a note of the most bytes fits too
    refused(format_proof(0, [], NOTE) + "x" * MAX_PROOF_BYTES, f"over {MAX_PROOF_BYTES} bytes")
    refused(("x" * (MAX_PROOF_BYTES + 1)).encode(), f"over {MAX_PROOF_BYTES} bytes")
    refused("\u00e9" * (MAX_PROOF_BYTES // 2 + 1), f"over {MAX_PROOF_BYTES} bytes")  # counted in UTF-8 bytes
    too_much = with_head(MAGIC, "extra " + b64(bytes(MAX_EXTRA_BYTES + 1)), "index 0")
    refused(too_much, f"extra data is over {MAX_EXTRA_BYTES} bytes")
    with pytest.raises(ValueError, match="extra data is over"):
        format_proof(0, [], NOTE, extra=bytes(MAX_EXTRA_BYTES + 1))


def test_messages_never_echo_much_input() -> None:
    for text in (
        with_head(MAGIC, "extra " + "A" * 10_000 + "!", "index 0"),
        with_head(MAGIC, "index " + "1" * 100_000),
        with_head(MAGIC, "index 0", "B" * 100_000),
        "y" * (MAX_PROOF_BYTES + 1),
    ):
        with pytest.raises(SignatureInvalid) as info:
            parse_proof(text)
        assert len(info.value.message) < 200


def test_encodings() -> None:
    refused(PROOF.encode()[:-1] + b"\xff", "not valid UTF-8")
    refused(b"\xff" + PROOF.encode(), "not valid UTF-8 \\(byte 0\\)")
    refused(PROOF.replace("index 3", "index 3\udc80"), "not valid UTF-8")
    with pytest.raises(SignatureInvalid, match="text or bytes"):
        parse_proof(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("index", "hashes", "note", "extra"),
    [
        (-1, [], NOTE, None),
        (2**64, [], NOTE, None),
        (True, [], NOTE, None),
        (1.0, [], NOTE, None),
        (0, [bytes(31)], NOTE, None),
        (0, [bytes(32)] * 65, NOTE, None),
        (0, ["00" * 32], NOTE, None),
        (0, [], NOTE[:-1], None),
        (0, [], "not a note\n", None),
        (0, [], NOTE, "text"),
    ],
)
def test_format_refuses_what_would_not_read_back(
    index: object, hashes: list[object], note: str, extra: object
) -> None:
    with pytest.raises(ValueError):
        format_proof(index, hashes, note, extra=extra)  # type: ignore[arg-type]


def test_claimed_origin() -> None:
    assert parse_proof(PROOF).claimed_origin() == ORIGIN
    spaced = make_log([RECEIPTS[0].leaf_bytes()], origin="a log", name="a-log")
    with pytest.raises(SignatureInvalid, match="not a valid key name"):
        parse_proof(spaced.proof(0)).claimed_origin()


# -- what a proof proves ------------------------------------------------------------------------------


def edit(number: int, line: str, text: str = PROOF) -> str:
    lines = lines_of(text)
    lines[number] = line
    return joined(lines)


def flip(encoded: str, at: int) -> str:
    raw = bytearray(base64.b64decode(encoded))
    raw[at] ^= 0x01
    return b64(bytes(raw))


def forged_extra(**changes: object) -> str:
    content = {**RECEIPTS[3].content(), **changes}
    return "extra " + b64(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (edit(1, forged_extra(principal="agent://mallory")), "root mismatch"),
        (edit(1, forged_extra(decision="denied")), "root mismatch"),
        (edit(1, "extra " + b64(RECEIPTS[4].leaf_bytes())), "root mismatch"),
        (edit(1, "extra " + b64(RECEIPTS[3].leaf_bytes() + b" ")), "root mismatch"),
        (edit(2, "index 2"), "root mismatch"),
        (edit(2, "index 5"), "root mismatch"),  # a path of the same length
        (edit(2, "index 6"), "1 extra node \\(expected 2\\)"),
        (edit(2, "index 7"), "index 7 beyond tree size 7"),
        (edit(2, f"index {2**64 - 1}"), "beyond tree size 7"),
        (edit(3, flip(lines_of(PROOF)[3], 0)), "root mismatch"),
        (edit(5, flip(lines_of(PROOF)[5], 31)), "root mismatch"),
        (joined(lines_of(PROOF)[:5] + lines_of(PROOF)[6:]), "missing 1 node"),
        (joined([*lines_of(PROOF)[:6], b64(bytes(32)), *lines_of(PROOF)[6:]]), "1 extra node"),
        (
            joined(
                lines_of(PROOF)[:3] + lines_of(PROOF)[4:6][::-1] + lines_of(PROOF)[3:4] + lines_of(PROOF)[6:]
            ),
            "root mismatch",
        ),
        (joined(lines_of(PROOF)[:1] + lines_of(PROOF)[2:]), "no extra line"),
        (edit(8, "8"), "does not match the note"),  # the checkpoint's size
        (edit(7, ORIGIN + "x"), "does not match the note"),  # the checkpoint's origin
    ],
)
def test_tampering_is_refused(text: str, match: str) -> None:
    not_proved(text, match)


def test_tampered_checkpoint_signature() -> None:
    lines = lines_of(PROOF)
    dash, name, blob = lines[-2].split(" ")
    not_proved(edit(len(lines) - 2, f"{dash} {name} {flip(blob, 4 + 100)}"), "does not match the note")
    not_proved(edit(len(lines) - 2, f"{dash} {name} {flip(blob, 0)}"), "no signature by")  # the key id
    truncated = b64(base64.b64decode(blob)[:-1])
    not_proved(edit(len(lines) - 2, f"{dash} {name} {truncated}"), "signature by .* is 3308 bytes")


def test_wrong_key_or_key_name() -> None:
    not_proved(PROOF, "no signature by", key=OTHER_KEY.public_key())
    not_proved(PROOF, "no signature by", key=SMALL_KEY.public_key())
    not_proved(PROOF, "no signature by", name="example.com/another-log")
    with pytest.raises(ValueError):
        check_proof(PROOF, PUBLIC, "a name with spaces")


def test_the_key_name_must_be_the_origin() -> None:
    log = make_log([r.leaf_bytes() for r in RECEIPTS], origin="example.com/log", name="example.com/key")
    not_proved(
        log.proof(0), "is for the log 'example.com/log', not 'example.com/key'", name="example.com/key"
    )


def test_seq_must_be_the_index() -> None:
    """A leaf that is in the tree but says another seq (never written by the ledger) is refused."""
    leaves = [r.leaf_bytes() for r in RECEIPTS]
    leaves[2] = make_receipt(5).leaf_bytes()
    log = make_log(leaves)
    not_proved(log.proof(2), "receipt says seq 5, but the proof is for index 2")
    leaves[2] = make_receipt(2).leaf_bytes().replace(b'"seq":2', b'"seq":true')
    not_proved(make_log(leaves).proof(2), "receipt says seq True")


@pytest.mark.parametrize(
    ("leaf", "match"),
    [
        (b"not json", "not a receipt: .*receipt leaf is not JSON"),
        (b'["seq", 2]', "not a receipt: receipt leaf must be a JSON object"),
        (b'{"seq":2,"seq":2}', "not a receipt: .*twice"),
        (b'{"seq": 2}', "not canonical receipt JSON"),
        (b'{"z":1,"seq":2}', "not canonical receipt JSON"),
        (b'{"seq":2,"x":"\\u00e9"}', "not canonical receipt JSON"),  # canonical JSON writes "é" as itself
        (b'{"seq":2,"x":' + b"[" * 50 + b"]" * 50 + b"}", "not a receipt: .*deeper"),
        (b'{"seq":2,"x":' + b"9" * 100 + b"}", "not a receipt: .*number"),
        (b'{"seq":2,"x":NaN}', "not a receipt"),
        (b"\xff", "not a receipt: .*UTF-8"),
        (b'{"x":2}', "receipt says seq None"),
    ],
)
def test_extra_must_be_canonical_receipt_json(leaf: bytes, match: str) -> None:
    leaves = [r.leaf_bytes() for r in RECEIPTS]
    leaves[2] = leaf
    not_proved(make_log(leaves).proof(2), match)


def test_extra_is_read_only_after_the_inclusion_holds() -> None:
    """Unauthenticated extra data is never parsed: hostile JSON in a proof fails as a root mismatch."""
    not_proved(edit(1, "extra " + b64(b"[" * 100_000)), "root mismatch")


def test_signing_key_chooses_by_key_id() -> None:
    proof = parse_proof(PROOF)
    candidates = [OTHER_KEY.public_key(), SMALL_KEY.public_key(), PUBLIC]
    assert signing_key(proof, ORIGIN, candidates) is PUBLIC
    with pytest.raises(SignatureInvalid, match="with a trusted key"):
        signing_key(proof, ORIGIN, candidates[:2])
    with pytest.raises(SignatureInvalid, match="with a trusted key"):
        signing_key(proof, "example.com/another-log", candidates)
    with pytest.raises(SignatureInvalid, match="with a trusted key"):
        signing_key(proof, ORIGIN, [])


# -- fuzzing --------------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PIECES = [
    MAGIC,
    "\n",
    "\n\n",
    "extra ",
    "index ",
    "0",
    "7",
    "03",
    "=",
    "==",
    "AAAA",
    " ",
    "\r",
    "\u2014 ",
    ORIGIN,
    *lines_of(PROOF)[1:6],
    *lines_of(NOTE)[:3],
    lines_of(NOTE)[-2],
]


def only_signature_invalid(text: str | bytes) -> TlogProof | None:
    try:
        return parse_proof(text)
    except SignatureInvalid:
        return None


@FUZZ
@given(st.text(max_size=2000) | st.binary(max_size=2000))
@example(MAGIC + "\n\n")
@example(MAGIC + "\nindex 0\n\n")
@example(MAGIC + "\nindex 0\n\n\n\n\u2014 a AAAAAA==\n")
@example(b"\x00" * 100)
def test_fuzz_arbitrary_input(text: str | bytes) -> None:
    only_signature_invalid(text)


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_fuzz_proof_shaped_input(text: str) -> None:
    parsed = only_signature_invalid(text)
    if parsed is not None:
        assert format_proof(parsed.index, parsed.hashes, parsed.checkpoint_note, parsed.extra) == text


@FUZZ
@given(st.data())
def test_fuzz_mutated_proofs_never_prove_anything_else(data: st.DataObject) -> None:
    """Delete, insert or replace one character (mostly in the header, where the parsing is): the
    result is refused with SignatureInvalid or, if it still reads and checks, proves the same."""
    head_end = PROOF.index("\n\n") + 2
    at = data.draw(st.integers(0, head_end) | st.integers(0, len(PROOF) - 1), label="at")
    how = data.draw(st.sampled_from(["delete", "insert", "replace"]), label="how")
    char = data.draw(st.sampled_from("\n =+/0189AQZaz-_\r\u2014") | st.characters(), label="char")
    if how == "delete":
        text = PROOF[:at] + PROOF[at + 1 :]
    elif how == "insert":
        text = PROOF[:at] + char + PROOF[at:]
    else:
        text = PROOF[:at] + char + PROOF[at + 1 :]
    try:
        checked = check_proof(text, PUBLIC, ORIGIN)
    except SignatureInvalid:
        return
    assert checked.receipt == RECEIPTS[3].content() and checked.index == 3


@FUZZ
@given(
    st.integers(0, 2**64 - 1),
    st.lists(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE), max_size=MAX_HASHES),
    st.none() | st.binary(max_size=300),
)
def test_fuzz_round_trip(index: int, hashes: list[bytes], extra: bytes | None) -> None:
    assert parse_proof(format_proof(index, hashes, NOTE, extra)) == TlogProof(
        index, tuple(hashes), NOTE, extra
    )


# -- the command line -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Home:
    path: Path
    origin: str
    ids: list[str]
    key_id: str


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A real ledger of five receipts in a temporary home, with a signed checkpoint at size 5."""
    for name in list(os.environ):
        if name.startswith("MACROSLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "home"
    monkeypatch.setenv("MACROSLOW_HOME", str(path))
    settings = Settings(home=path, _env_file=None)  # type: ignore[call-arg]
    initialize(settings, example=False)
    engine = open_engine(settings.database, durable=True)
    try:
        ledger = Ledger(engine, open_keys(settings))
        ids = [
            ledger.append(
                Draft(
                    principal=f"agent://u{i}",
                    issuer="local",
                    token_id=None,
                    scopes="maml:read",
                    tool="verify_maml",
                    action="read",
                    decision="allowed" if i % 2 else "denied",
                    reason=None if i % 2 else "forbidden: x",
                    outcome="ok" if i % 2 else "forbidden",
                )
            ).id
            for i in range(5)
        ]
        stored = ledger.checkpoint()
        origin = ledger.origin
    finally:
        engine.dispose()
    assert stored is not None and stored.size == 5
    yield Home(path, origin, ids, stored.key_id)


def prove(capsys: pytest.CaptureFixture[str], receipt_id: str, path: str = "r.tlog-proof") -> str:
    code, _, err = run(capsys, "receipts", "prove", receipt_id, "--tlog-proof", "-o", path)
    assert code == 0, err
    return Path(path).read_text(encoding="utf-8")


def export_key(capsys: pytest.CaptureFixture[str], home: Home, path: str = "log.pub.pem") -> str:
    code, _, err = run(capsys, "keys", "export", home.key_id, "-o", path)
    assert code == 0, err
    return path


def test_prove_writes_a_tlog_proof(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "receipts", "prove", home.ids[3], "--tlog-proof")
    assert code == 0 and err == ""
    proof = parse_proof(out)
    assert proof.index == 3 and proof.claimed_origin() == home.origin
    code, printed, _ = run(capsys, "receipts", "prove", home.ids[3], "--tlog-proof", "-o", "r.tlog-proof")
    assert code == 0 and Path("r.tlog-proof").read_text(encoding="utf-8") == out
    assert printed == f"inclusion proof of receipt {home.ids[3]} (entry 3 of 5) -> r.tlog-proof\n"
    _, plain, _ = run(capsys, "receipts", "prove", home.ids[3])  # the JSON form: the same proof
    proved = json.loads(plain)
    assert [h.hex() for h in proof.hashes] == proved["proof"] and proof.checkpoint_note == proved[
        "checkpoint"
    ]
    assert proof.extra is not None and leaf_hash(proof.extra).hex() == proved["leaf_hash"]


def test_check_proof_with_the_trust_store(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    prove(capsys, home.ids[1])
    code, out, err = run(capsys, "receipts", "check-proof", "r.tlog-proof")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        f"ok: receipt {home.ids[1]}: verify_maml by agent://u1, allowed (ok)",
        f"  entry 1 of 5 in {home.origin}, checkpoint signed by key {home.key_id}",
    ]


def test_check_proof_json(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    prove(capsys, home.ids[0])
    code, out, _ = run(capsys, "receipts", "check-proof", "r.tlog-proof", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True
    assert (data["index"], data["tree_size"], data["origin"], data["key_id"]) == (
        0,
        5,
        home.origin,
        home.key_id,
    )
    assert data["receipt"]["id"] == home.ids[0] and data["receipt"]["decision"] == "denied"
    assert data["receipt"]["seq"] == 0 and data["receipt"]["v"] == 1 and len(data["root"]) == 64


def test_check_proof_with_a_key_file_needs_no_home(
    home: Home, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prove(capsys, home.ids[4])
    key = export_key(capsys, home)
    elsewhere = tmp_path / "elsewhere"
    code, out, err = run(
        capsys, "--home", str(elsewhere), "receipts", "check-proof", "r.tlog-proof", "--key", key
    )
    assert code == 0, err
    assert out.startswith(f"ok: receipt {home.ids[4]}: ")
    assert not elsewhere.exists()  # offline: no database, no key store opened


def test_check_proof_origin(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    prove(capsys, home.ids[2])
    code, _, _ = run(capsys, "receipts", "check-proof", "r.tlog-proof", "--origin", home.origin)
    assert code == 0
    code, out, err = run(capsys, "receipts", "check-proof", "r.tlog-proof", "--origin", "example.com/other")
    assert code == 1 and out == "" and "no signature by 'example.com/other'" in err
    code, _, err = run(capsys, "receipts", "check-proof", "r.tlog-proof", "--origin", "not a name")
    assert code == 2 and err.startswith("macroslow-mcp: --origin: ")


def tamper(text: str, number: int, line: str) -> str:
    lines = text.split("\n")
    lines[number] = line
    return "\n".join(lines)


def test_bad_proofs_exit_1_with_one_line(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    real = prove(capsys, home.ids[1])
    key = export_key(capsys, home)
    lines = real.split("\n")
    forged = json.loads(base64.b64decode(lines[1][6:]))
    forged["principal"] = "agent://mallory"
    forged_line = "extra " + b64(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode())
    dash, name, blob = lines[-2].split(" ")
    bad = {
        "receipt": tamper(real, 1, forged_line),
        "index": tamper(real, 2, "index 0"),
        "hash": tamper(real, 3, flip(lines[3], 5)),
        "signature": tamper(real, len(lines) - 2, f"{dash} {name} {flip(blob, 200)}"),
        "format": real.replace("index 1", "index 01"),
        "not UTF-8": real[:10] + "\udcff",
    }
    for what, text in bad.items():
        Path("bad.tlog-proof").write_bytes(text.encode("utf-8", "surrogateescape"))
        for extra_args in ([], ["--key", key]):
            code, out, err = run(capsys, "receipts", "check-proof", "bad.tlog-proof", *extra_args)
            assert code == 1 and out == "", what
            assert err.startswith("macroslow-mcp: signature_invalid: ") and err.count("\n") == 1, (what, err)


def test_wrong_or_untrusted_key_exits_1(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    prove(capsys, home.ids[1])
    Path("other.pub.pem").write_bytes(public_pem(OTHER_KEY.public_key()))
    code, _, err = run(capsys, "receipts", "check-proof", "r.tlog-proof", "--key", "other.pub.pem")
    assert code == 1 and "no signature by" in err
    code, _, _ = run(capsys, "keys", "generate")  # another trusted key, then the log's key untrusted
    assert code == 0
    code, _, _ = run(capsys, "keys", "untrust", home.key_id)
    assert code == 0
    code, _, err = run(capsys, "receipts", "check-proof", "r.tlog-proof")
    assert code == 1 and "with a trusted key" in err


def test_usage_and_unreadable_files_exit_2(
    home: Home, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prove(capsys, home.ids[1])
    Path("big.tlog-proof").write_bytes(b"x" * (MAX_PROOF_BYTES + 1))
    Path("not-a-key.pem").write_text("hello\n", encoding="ascii")
    cases = [
        (["receipts", "check-proof", "missing.tlog-proof"], "cannot read missing.tlog-proof"),
        (["receipts", "check-proof", str(tmp_path)], "Is a directory"),
        (["receipts", "check-proof", "/dev/zero"], "not a regular file"),
        (["receipts", "check-proof", "big.tlog-proof"], "request_too_large"),
        (["receipts", "check-proof", "r.tlog-proof", "--key", "missing.pem"], "cannot read missing.pem"),
        (["receipts", "check-proof", "r.tlog-proof", "--key", "not-a-key.pem"], "key_error: not a PEM"),
        (["--home", str(tmp_path / "empty"), "receipts", "check-proof", "r.tlog-proof"], "no trusted keys"),
        (["receipts", "prove", home.ids[1], "-o", "x.tlog-proof"], "give --tlog-proof too"),
        (["receipts", "prove", "--tlog-proof", "--consistency", "1", "2"], "leave out --consistency"),
        (["receipts", "prove", "--tlog-proof"], "give the id"),
        (["receipts", "prove", "nope", "--tlog-proof"], "not_found"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
    code, _, err = run(capsys, "receipts", "check-proof")  # argparse: FILE is required
    assert code == 2 and "required: FILE" in err
