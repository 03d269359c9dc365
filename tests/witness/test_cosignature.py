"""ML-DSA-44 cosignatures (c2sp.org/tlog-cosignature): known answers from the spec's structures, round
trips, every tamper refused, and a cross-check of the signatures with dilithium-py.

No independent implementation of ML-DSA-44 *cosignatures* could be installed from PyPI or npm: the
one C2SP tlog package found there, aics-tlog 0.2.1, implements only the Ed25519 `cosignature/v1`
type (and needs Python 3.12). So the message bytes are pinned from the spec's struct here, field by
field, and the ML-DSA-44 signatures over them are checked with dilithium-py, an independent FIPS 204
implementation, in both directions (empty context string).
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey
from dilithium_py.ml_dsa import ML_DSA_44

from mcp_server.errors import KeyStoreError, SignatureInvalid
from mcp_server.ledger import checkpoint as notes
from mcp_server.witness import cosignature
from tests.witness.conftest import ORIGIN, Log, seeded

WITNESS = "witness.example/w1"
SPEC_ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")


def test_cosigned_message_known_answer() -> None:
    # The tlog-cosignature example checkpoint (origin, size, root) and timestamp, laid out by hand.
    fields = [
        "737562747265652f76310a00",  # label "subtree/v1\n\0"
        "12" + b"witness.example/w1".hex(),  # cosigner_name<1..255>: 18 bytes
        "00000000641850cb",  # timestamp 1679315147
        "1b" + b"example.com/behind-the-sofa".hex(),  # log_origin<1..255>: 27 bytes
        "0000000000000000",  # start 0
        "00000000013e2dc3",  # end 20852163
        "0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62",  # hash
    ]
    expected = bytes.fromhex("".join(fields))
    got = cosignature.cosigned_message(
        WITNESS, 1679315147, "example.com/behind-the-sofa", 0, 20852163, SPEC_ROOT
    )
    assert got == expected
    assert len(got) == 12 + 1 + 18 + 8 + 1 + 27 + 8 + 8 + 32


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", 0, "o", 0, 1, SPEC_ROOT), "cosigner_name"),
        (("n" * 256, 0, "o", 0, 1, SPEC_ROOT), "cosigner_name"),
        (("n", 0, "", 0, 1, SPEC_ROOT), "log_origin"),
        (("n", 1 << 63, "o", 0, 1, SPEC_ROOT), "timestamp"),
        (("n", -1, "o", 0, 1, SPEC_ROOT), "timestamp"),
        (("n", 0, "o", 0, 1 << 64, SPEC_ROOT), "end"),
        (("n", 0, "o", 2, 1, SPEC_ROOT), "after end"),
        (("n", 5, "o", 1, 2, SPEC_ROOT), "zero timestamp"),
        (("n", 0, "o", 0, 1, SPEC_ROOT[:31]), "32 bytes"),
    ],
)
def test_cosigned_message_refuses_what_the_struct_cannot_hold(args: tuple, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        cosignature.cosigned_message(*args)


def test_subtree_message_with_zero_timestamp() -> None:
    message = cosignature.cosigned_message("n", 0, "o", 8, 13, SPEC_ROOT)
    assert message.endswith((8).to_bytes(8, "big") + (13).to_bytes(8, "big") + SPEC_ROOT)


def test_key_id_known_answer() -> None:
    key = seeded_from_range().public_key()
    raw = key.public_bytes_raw()
    assert len(raw) == 1312
    # The FIPS 204 key of seed 00 01 .. 1f, pinned, then the tlog-cosignature key ID formula.
    assert (
        hashlib.sha256(raw).hexdigest() == "9f107644c1084526af3bc8098680b05499a2325a644e388fb4f970e058d19d46"
    )
    assert cosignature.key_id(WITNESS, key) == bytes.fromhex("dcccf9ec")
    assert cosignature.key_id(WITNESS, key) == hashlib.sha256(WITNESS.encode() + b"\n\x06" + raw).digest()[:4]
    assert cosignature.key_id(WITNESS + "x", key) != cosignature.key_id(WITNESS, key)


def seeded_from_range():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

    return MLDSA44PrivateKey.from_seed_bytes(bytes(range(32)))


def test_vkey_known_answer_and_round_trip() -> None:
    key = seeded_from_range().public_key()
    text = cosignature.vkey(WITNESS, key)
    name, key_id, material = text.split("+", 2)
    assert (name, key_id) == (WITNESS, "dcccf9ec")
    assert base64.b64decode(material) == b"\x06" + key.public_bytes_raw()
    assert material.startswith("Bteyt")  # 0x06 then the key's first bytes
    parsed_name, parsed_key = cosignature.parse_vkey(text)
    assert parsed_name == WITNESS
    assert parsed_key.public_bytes_raw() == key.public_bytes_raw()
    # Hex digits in upper case are the same key ID.
    assert cosignature.parse_vkey(f"{name}+{key_id.upper()}+{material}")[0] == WITNESS


def test_parse_vkey_refuses_malformed_keys() -> None:
    key = seeded_from_range().public_key()
    name, key_id, material = cosignature.vkey(WITNESS, key).split("+", 2)
    raw = key.public_bytes_raw()
    type1 = base64.b64encode(b"\x01" + raw).decode()
    short = base64.b64encode(b"\x06" + raw[:-1]).decode()
    bad = {
        "two parts": f"{name}+{key_id}",
        "name with space": f"a b+{key_id}+{material}",
        "short key id": f"{name}+{key_id[:7]}+{material}",
        "non-hex key id": f"{name}+zzzzzzzz+{material}",
        "wrong key id": f"{name}+00000000+{material}",
        "other name": f"other.example+{key_id}+{material}",
        "type 0x01": f"{name}+{key_id}+{type1}",
        "short key": f"{name}+{key_id}+{short}",
        "not base64": f"{name}+{key_id}+{material[:-4]}!!!!",
        "unpadded": f"{name}+{key_id}+{material.rstrip('=')}x",
        "huge": f"{name}+{key_id}+" + "A" * 5000,
    }
    for what, text in bad.items():
        with pytest.raises(KeyStoreError):
            cosignature.parse_vkey(text)
            pytest.fail(what)


# -- signing and verifying --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def witness_key():  # type: ignore[no-untyped-def]
    return seeded("witness")


def test_round_trip_and_timestamp(log: Log, witness_key) -> None:  # type: ignore[no-untyped-def]
    note = log.note(7)
    line = cosignature.sign_line(note, WITNESS, witness_key, 1_700_000_123)
    assert line.startswith(f"\u2014 {WITNESS} ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 4 + 8 + 2420
    assert blob[:4] == cosignature.key_id(WITNESS, witness_key.public_key())
    assert int.from_bytes(blob[4:12], "big") == 1_700_000_123
    cosigned = note + line
    assert cosignature.verify_line(cosigned, WITNESS, witness_key.public_key()) == 1_700_000_123
    # The log's own line verifies too: it is the same format, named by the origin.
    assert cosignature.verify_line(cosigned, ORIGIN, log.key.public_key()) > 0
    # Signing the bare text or the whole note gives a line over the same message.
    text, _ = notes._split_note(note)
    other = cosignature.sign_line(text, WITNESS, witness_key, 1_700_000_123)
    assert cosignature.verify_line(note + other, WITNESS, witness_key.public_key()) == 1_700_000_123


def test_signature_is_pure_ml_dsa_44_with_empty_context(log: Log, witness_key) -> None:  # type: ignore[no-untyped-def]
    """dilithium-py verifies our signature over the hand-built message, and signs one we accept."""
    size, timestamp = 9, 1_700_000_456
    note = log.note(size)
    line = cosignature.sign_line(note, WITNESS, witness_key, timestamp)
    signature = base64.b64decode(line.split(" ")[2])[12:]
    message = (
        b"subtree/v1\n\x00"
        + bytes([len(WITNESS)])
        + WITNESS.encode()
        + timestamp.to_bytes(8, "big")
        + bytes([len(ORIGIN)])
        + ORIGIN.encode()
        + bytes(8)
        + size.to_bytes(8, "big")
        + log.root(size)
    )
    public = witness_key.public_key().public_bytes_raw()
    assert ML_DSA_44.verify(public, message, signature, ctx=b"")
    assert not ML_DSA_44.verify(public, message, signature, ctx=b"subtree/v1")

    pk, sk = ML_DSA_44.keygen()
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PublicKey

    theirs = MLDSA44PublicKey.from_public_bytes(pk)
    foreign = ML_DSA_44.sign(sk, message.replace(WITNESS.encode(), b"witness.example/w2"), ctx=b"")
    blob = cosignature.key_id("witness.example/w2", theirs) + timestamp.to_bytes(8, "big") + foreign
    their_line = f"\u2014 witness.example/w2 {base64.b64encode(blob).decode()}\n"
    assert cosignature.verify_line(note + their_line, "witness.example/w2", theirs) == timestamp


def _line_blob(line: str) -> tuple[str, bytes]:
    _, name, encoded = line.rstrip("\n").split(" ")
    return name, base64.b64decode(encoded)


def _line(name: str, blob: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(blob).decode()}\n"


def test_every_tamper_is_refused(log: Log, witness_key) -> None:  # type: ignore[no-untyped-def]
    public = witness_key.public_key()
    note = log.note(10)
    text, _ = notes._split_note(note)
    line = cosignature.sign_line(note, WITNESS, witness_key, 1_700_000_000)
    name, blob = _line_blob(line)
    assert cosignature.verify_line(note + line, WITNESS, public)

    def refused(cosigned: str, match: str | None = None) -> None:
        with pytest.raises(SignatureInvalid, match=match):
            cosignature.verify_line(cosigned, WITNESS, public)

    origin, size, root = text.splitlines()
    other_root = base64.b64encode(log.root(11)).decode()
    signature_lines = note[len(text) + 1 :] + line
    refused(f"{origin}x\n{size}\n{root}\n\n" + signature_lines, "does not match")
    refused(f"{origin}\n11\n{root}\n\n" + signature_lines, "does not match")
    refused(f"{origin}\n{size}\n{other_root}\n\n" + signature_lines, "does not match")
    # Timestamp, signature bytes, key ID, length.
    later = blob[:4] + (1_700_000_001).to_bytes(8, "big") + blob[12:]
    refused(note + _line(name, later), "does not match")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    refused(note + _line(name, flipped), "does not match")
    refused(note + _line(name, blob[:-1]), "bytes")
    refused(note + _line(name, blob + b"\0"), "bytes")
    too_late = blob[:4] + (1 << 63).to_bytes(8, "big") + blob[12:]
    refused(note + _line(name, too_late), "2\\^63-1")
    other_id = bytes([blob[0] ^ 1]) + blob[1:]
    refused(note + _line(name, other_id), "no cosignature")  # another key's line: ignored
    refused(note + line.replace(WITNESS, "witness.example/w2"), "no cosignature")
    refused(note, "no cosignature")
    # A line of another key by the same name is ignored; a bad line of this key spoils a good one.
    other = cosignature.sign_line(note, WITNESS, seeded("other witness"), 1)
    assert cosignature.verify_line(note + other + line, WITNESS, public) == 1_700_000_000
    refused(note + line + _line(name, flipped), "does not match")
    # Not a signed note, or not a checkpoint.
    refused((note + line).replace("\n", "\r\n"), "control")
    refused(text + line)
    refused("hello\nworld\n\n" + line, "not a checkpoint")
    # Extension lines are not signed (tlog-cosignature: "not included in the signed message").
    extended = text + "ext\n\n" + signature_lines
    assert cosignature.verify_line(extended, WITNESS, public) == 1_700_000_000


def test_sign_line_refuses_bad_arguments(log: Log, witness_key) -> None:  # type: ignore[no-untyped-def]
    note = log.note(3)
    with pytest.raises(ValueError, match="timestamp"):
        cosignature.sign_line(note, WITNESS, witness_key, 1 << 63)
    with pytest.raises(ValueError, match="ML-DSA-44"):
        cosignature.sign_line(note, WITNESS, MLDSA65PrivateKey.generate(), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cosignature.sign_line(note, "bad name", witness_key, 1)
    with pytest.raises(ValueError, match="not a checkpoint"):
        cosignature.sign_line("just text\n", WITNESS, witness_key, 1)
    with pytest.raises(ValueError, match="ML-DSA-44"):
        cosignature.key_id(WITNESS, MLDSA65PrivateKey.generate().public_key())  # type: ignore[arg-type]
