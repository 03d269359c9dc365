"""Checkpoints as C2SP signed notes with ML-DSA: format, round trips, and every corruption refused."""

from __future__ import annotations

import base64
import hashlib

import pytest
from dilithium_py.ml_dsa import ML_DSA_44, ML_DSA_65, ML_DSA_87

from mcp_server.crypto import mldsa
from mcp_server.errors import SignatureInvalid
from mcp_server.ledger.checkpoint import (
    CHECKPOINT_CONTEXT,
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    body,
    check_key_name,
    key_id,
    open_checkpoint,
    parse_body,
    sign_checkpoint,
    signature_type,
)
from mcp_server.ledger.merkle import EMPTY_ROOT, leaf_hash

Algorithm = mldsa.Algorithm
NAME = "example.com/macroslow"
ROOT = hashlib.sha256(b"some root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
CP = Checkpoint(origin=NAME, size=12345, root=ROOT)
URLSAFE_ROOT = base64.urlsafe_b64encode(bytes([0xFB]) * 32).decode()  # has "-" and "_"

KEYS = {algorithm: mldsa.from_seed(algorithm, bytes([n]) * 32) for n, algorithm in enumerate(Algorithm)}
KEY = KEYS[Algorithm.ML_DSA_65]
OTHER_KEY = mldsa.from_seed(Algorithm.ML_DSA_65, b"\x99" * 32)
INDEPENDENT = {Algorithm.ML_DSA_44: ML_DSA_44, Algorithm.ML_DSA_65: ML_DSA_65, Algorithm.ML_DSA_87: ML_DSA_87}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def handmade_key_id(name: str, public_key: mldsa.PublicKey) -> bytes:
    """The key ID as the module docstring writes it, computed here without the module."""
    kind = b"\xff" + b"macroslow-mcp/checkpoint/v1/" + mldsa.algorithm_of(public_key).value.encode()
    return hashlib.sha256(name.encode() + b"\n" + kind + public_key.public_bytes_raw()).digest()[:4]


def handmade_note(text: str, name: str, key: mldsa.PrivateKey, context: bytes = CHECKPOINT_CONTEXT) -> str:
    """A signed note made without the module: lets a test sign a text that isn't a valid checkpoint."""
    signature = key.sign(text.encode(), context)
    return f"{text}\n\u2014 {name} {b64(handmade_key_id(name, key.public_key()) + signature)}\n"


def signature_line(note: str) -> str:
    return note[note.rindex("\n\n") + 2 :]


NOTE = sign_checkpoint(CP, NAME, KEY)


def refused(note: str | bytes, match: str, key: mldsa.PrivateKey = KEY, name: str = NAME) -> None:
    with pytest.raises(SignatureInvalid, match=match):
        open_checkpoint(note, name, key.public_key())


# -- format -----------------------------------------------------------------------------------------


def test_body_is_tlog_checkpoint_text() -> None:
    assert body(CP) == f"{NAME}\n12345\n{ROOT_B64}\n".encode()
    empty = Checkpoint(origin="o", size=0, root=EMPTY_ROOT, extensions=("ext one", "two"))
    assert body(empty) == f"o\n0\n{b64(EMPTY_ROOT)}\next one\ntwo\n".encode()


def test_note_layout() -> None:
    text, line = NOTE.split("\n\n")
    assert text + "\n" == body(CP).decode()
    assert line.startswith("\u2014 " + NAME + " ") and line.endswith("\n") and line.count("\n") == 1
    blob = base64.b64decode(line.split(" ")[2].rstrip("\n"), validate=True)
    assert blob[:4] == handmade_key_id(NAME, KEY.public_key())
    assert len(blob) == 4 + mldsa.SIGNATURE_BYTES[Algorithm.ML_DSA_65]


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_round_trip(algorithm: mldsa.Algorithm) -> None:
    key = KEYS[algorithm]
    for cp in (CP, Checkpoint("o", 0, EMPTY_ROOT), Checkpoint("é/ü", 2**64 - 1, ROOT, ("x", "y z"))):
        note = sign_checkpoint(cp, NAME, key)
        assert open_checkpoint(note, NAME, key.public_key()) == cp
        assert open_checkpoint(note.encode(), NAME, key.public_key()) == cp
    # An independent ML-DSA implementation accepts the signature, with the checkpoint context only.
    note = sign_checkpoint(CP, NAME, key)
    signature = base64.b64decode(signature_line(note).split(" ")[2])[4:]
    public = key.public_key().public_bytes_raw()
    assert INDEPENDENT[algorithm].verify(public, body(CP), signature, ctx=CHECKPOINT_CONTEXT) is True
    assert INDEPENDENT[algorithm].verify(public, body(CP), signature, ctx=mldsa.MAML_CONTEXT) is False


def test_key_id_as_documented() -> None:
    public = mldsa.from_seed(Algorithm.ML_DSA_44, bytes(32)).public_key()
    raw = public.public_bytes_raw()
    # FIPS 204 key generation is deterministic: this seed always gives this public key.
    assert hashlib.sha256(raw).hexdigest().startswith("eb4e7302842153b0fa19e8620739ad25")
    material = b"example.com/log" + b"\n" + b"\xff" + b"macroslow-mcp/checkpoint/v1/ML-DSA-44" + raw
    assert key_id("example.com/log", public) == hashlib.sha256(material).digest()[:4]
    assert key_id("example.com/log", public).hex() == "6ec93a92"
    assert signature_type(Algorithm.ML_DSA_87) == b"\xffmacroslow-mcp/checkpoint/v1/ML-DSA-87"
    assert key_id("example.com/log2", public) != key_id("example.com/log", public)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b", "a\nb", "a\x01b"])
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(ValueError):
        check_key_name(name)
    with pytest.raises(ValueError):
        sign_checkpoint(CP, name, KEY)
    with pytest.raises(ValueError):
        open_checkpoint(NOTE, name, KEY.public_key())


@pytest.mark.parametrize(
    "cp",
    [
        Checkpoint("", 1, ROOT),
        Checkpoint("a\nb", 1, ROOT),
        Checkpoint("a\rb", 1, ROOT),
        Checkpoint("a\udcffb", 1, ROOT),
        Checkpoint(NAME, -1, ROOT),
        Checkpoint(NAME, 2**64, ROOT),
        Checkpoint(NAME, True, ROOT),
        Checkpoint(NAME, 1, ROOT[:-1]),
        Checkpoint(NAME, 1, ROOT, ("",)),
        Checkpoint(NAME, 1, ROOT, ("a\nb",)),
    ],
)
def test_body_refuses_what_it_cannot_write(cp: Checkpoint) -> None:
    with pytest.raises(ValueError):
        body(cp)


# -- corruptions ------------------------------------------------------------------------------------


def test_changed_size() -> None:
    refused(NOTE.replace("\n12345\n", "\n12346\n"), "does not match the note")


def test_changed_root_one_bit() -> None:
    flipped = bytes([ROOT[0] ^ 1]) + ROOT[1:]
    refused(NOTE.replace(ROOT_B64, b64(flipped)), "does not match the note")


def test_changed_origin() -> None:
    refused(NOTE.replace(NAME + "\n", "example.com/other\n", 1), "does not match the note")


def test_added_extension_line() -> None:
    refused(NOTE.replace(ROOT_B64 + "\n", ROOT_B64 + "\nextension\n"), "does not match the note")


def test_signature_by_another_key() -> None:
    refused(sign_checkpoint(CP, NAME, OTHER_KEY), "no signature by example.com/macroslow")


def test_key_of_another_parameter_set() -> None:
    refused(sign_checkpoint(CP, NAME, KEYS[Algorithm.ML_DSA_44]), "no signature by")


def test_signature_with_another_context() -> None:
    # A MAML document signature by the same key over the same bytes is not a checkpoint signature.
    refused(handmade_note(body(CP).decode(), NAME, KEY, mldsa.MAML_CONTEXT), "does not match the note")


def test_tampered_signature() -> None:
    blob = bytearray(base64.b64decode(signature_line(NOTE).split(" ")[2]))
    blob[100] ^= 0x10
    refused(NOTE.replace(signature_line(NOTE).split(" ")[2], b64(bytes(blob)) + "\n"), "does not match")


def test_truncated_signature() -> None:
    encoded = signature_line(NOTE).split(" ")[2].rstrip("\n")
    blob = base64.b64decode(encoded)
    refused(NOTE.replace(encoded, b64(blob[:-300])), "signature by example.com/macroslow is 3009 bytes")
    refused(NOTE.replace(encoded, encoded[:-7]), "signature line 1 is not")  # broken base64
    refused(NOTE.replace(encoded, b64(blob[:4])), "signature line 1 is not")  # a key id alone


def test_missing_blank_line() -> None:
    refused(NOTE.replace("\n\n", "\n"), "no blank line")


def test_extra_trailing_text() -> None:
    refused(NOTE + "trailing", "does not end with a newline")
    refused(NOTE + "trailing\n", "signature line 2 does not start with an em dash")
    refused(NOTE + "\n", "no signature lines")


def test_crlf_line_endings() -> None:
    refused(NOTE.replace("\n", "\r\n"), "control character U\\+000D")


def test_non_utf8() -> None:
    raw = bytearray(NOTE.encode())
    raw[3] = 0xFF
    refused(bytes(raw), "not valid UTF-8")
    refused(NOTE.replace("example", "exa\udcffmple", 1), "not valid UTF-8")


def test_oversized_note() -> None:
    padded = NOTE.replace(ROOT_B64 + "\n", ROOT_B64 + "\n" + "x" * MAX_NOTE_BYTES + "\n")
    refused(padded, f"note is over {MAX_NOTE_BYTES} bytes")
    refused(padded.encode(), f"note is over {MAX_NOTE_BYTES} bytes")


def test_other_control_characters() -> None:
    refused(NOTE.replace(NAME + "\n", NAME + "\t\n", 1), "control character U\\+0009")
    refused(NOTE.replace(NAME + "\n", NAME + "\x00\n", 1), "control character U\\+0000")


@pytest.mark.parametrize(
    "size",
    ["007", "00", "+7", " 7", "7 ", "-1", "1e3", "0x10", "\u0663", "18446744073709551616", "1" + "0" * 30],
)
def test_non_canonical_or_huge_size(size: str) -> None:
    # Signed with a valid signature, so the refusal is the checkpoint parser's, not the signature's.
    note = handmade_note(f"{NAME}\n{size}\n{ROOT_B64}\n", NAME, KEY)
    refused(note, "signed note is not a checkpoint: tree size")


def test_largest_size() -> None:
    note = handmade_note(f"{NAME}\n18446744073709551615\n{ROOT_B64}\n", NAME, KEY)
    assert open_checkpoint(note, NAME, KEY.public_key()).size == 2**64 - 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (f"{NAME}\n5\n", "has 2 lines"),
        (f"{NAME}\n5\n{ROOT_B64[:-1]}\n", "root"),  # not base64
        (f"{NAME}\n5\n{b64(ROOT[:-1])}\n", "root"),  # 31 bytes
        (f"{NAME}\n5\n{ROOT_B64.rstrip('=')}\n", "root"),  # unpadded
        (f"{NAME}\n5\n{URLSAFE_ROOT}\n", "root"),  # URL-safe alphabet
        (f"{NAME}\n5\n{ROOT_B64}\n\nextension\n", "line 4 is empty"),
        (f"\n5\n{ROOT_B64}\n", "line 1 is empty"),
    ],
)
def test_body_not_a_checkpoint(text: str, match: str) -> None:
    refused(handmade_note(text, NAME, KEY), f"signed note is not a checkpoint: .*{match}")


def test_non_canonical_base64_root() -> None:
    # Same 32 bytes, but the unused low bits of the last character set: refused, not normalised.
    encoded = ROOT_B64[:-2] + chr(ord(ROOT_B64[-2]) + 1) + "="
    assert base64.b64decode(encoded) == ROOT
    refused(handmade_note(f"{NAME}\n5\n{encoded}\n", NAME, KEY), "not a checkpoint: root")


def test_parse_body_directly() -> None:
    assert parse_body(body(CP).decode()) == CP
    with pytest.raises(SignatureInvalid, match="does not end with a newline"):
        parse_body(body(CP).decode()[:-1])


# -- other signatures -------------------------------------------------------------------------------


def test_unrelated_signature_lines_are_ignored() -> None:
    witness = signature_line(sign_checkpoint(CP, "witness.example/w1", OTHER_KEY))
    assert open_checkpoint(NOTE + witness, NAME, KEY.public_key()) == CP
    text, ours = NOTE.split("\n\n")
    assert open_checkpoint(f"{text}\n\n{witness}{ours}", NAME, KEY.public_key()) == CP
    # Same name, other key ID (a rotated key): ignored too.
    rotated = signature_line(sign_checkpoint(CP, NAME, OTHER_KEY))
    assert open_checkpoint(NOTE + rotated, NAME, KEY.public_key()) == CP
    # And the witness's own view of the same note.
    assert open_checkpoint(NOTE + witness, "witness.example/w1", OTHER_KEY.public_key()) == CP


def test_a_bad_signature_by_our_key_rejects_the_note() -> None:
    # signed-note: "If a signature from a known key fails to verify, clients SHOULD reject the whole note."
    forged = handmade_note(f"{NAME}\n1\n{ROOT_B64}\n", NAME, KEY)
    refused(NOTE + signature_line(forged), "does not match the note")


def test_signature_count_limit() -> None:
    def fake(n: int) -> str:
        return f"\u2014 other{n}.example {b64(bytes([n]) * 40)}\n"

    sixteen = NOTE + "".join(fake(n) for n in range(15))
    assert open_checkpoint(sixteen, NAME, KEY.public_key()) == CP  # the spec's minimum: 16
    too_many = NOTE + "".join(fake(n) for n in range(MAX_SIGNATURES))
    refused(too_many, "signatures; at most")


@pytest.mark.parametrize(
    "line",
    [
        "- example.com/x AAAAAAAA\n",  # hyphen, not em dash
        "\u2014example.com/x AAAAAAAA\n",  # no space after the dash
        "\u2014 example.com/x\n",  # no signature
        "\u2014 example.com/x AAAAAAAA extra\n",
        "\u2014 example.com/x !!!!\n",
        "\u2014 a+b AAAAAAAA\n",  # invalid key name
    ],
)
def test_malformed_signature_lines(line: str) -> None:
    refused(NOTE + line, "signature line 2")


def test_leaf_hash_and_checkpoint_compose() -> None:
    # What the ledger does: a root over receipts' leaf hashes, signed, opened, compared.
    root = hashlib.sha256(b"\x01" + leaf_hash(b"a") + leaf_hash(b"b")).digest()
    cp = Checkpoint(NAME, 2, root)
    assert open_checkpoint(sign_checkpoint(cp, NAME, KEY), NAME, KEY.public_key()).root == root
