"""sign_document / sign_detached / inspect_signature, and the key store that backs them."""

from __future__ import annotations

import json
import re
import stat
import string
from pathlib import Path

import pytest

from mcp_server.crypto import mldsa
from mcp_server.crypto.keys import KeyStore, TrustStore, _write_new, check_key_id
from mcp_server.errors import InvalidDocument, KeyStoreError, NotFound, RequestTooLarge, SignatureInvalid
from mcp_server.maml import parser
from mcp_server.signing import (
    DETACHED_FORMAT,
    DETACHED_MAX_BYTES,
    digest,
    inspect_signature,
    sign_detached,
    sign_document,
)

B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
VALUE = re.compile(r'^  value: "(?P<b64>[A-Za-z0-9+/=]*)"$', re.MULTILINE)


def signed_text(document: str, keys: KeyStore, **kwargs: str) -> str:
    return sign_document(document, keys, **kwargs).signed_document


def value_span(text: str) -> tuple[int, int]:
    match = VALUE.search(text)
    assert match is not None
    return match.span("b64")


def other_store(root: Path) -> KeyStore:
    return KeyStore(root / "keys", TrustStore(root / "trust"))


# -- valid signatures ---------------------------------------------------------------------------


def test_sign_and_inspect(example_text: str, keystore: KeyStore) -> None:
    kid = keystore.default_key_id()
    assert kid is not None
    signed = sign_document(example_text, keystore)
    assert (signed.key_id, signed.algorithm) == (kid, "ML-DSA-65")
    assert signed.document_id == "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
    assert signed.digest == digest(example_text.encode())

    block = parser.parse(signed.signed_document).front_matter.signature
    assert block is not None
    assert (block.algorithm, block.key_id, block.digest) == ("ML-DSA-65", kid, signed.digest)

    report = inspect_signature(signed.signed_document, keystore)
    assert (report.valid, report.trusted, report.signed) == (True, True, True)
    assert (report.key_id, report.algorithm, report.digest) == (kid, "ML-DSA-65", signed.digest)
    assert report.document_id == signed.document_id
    assert report.reasons == []
    # The same bytes with CRLF line endings verify too.
    assert inspect_signature(signed.signed_document.replace("\n", "\r\n"), keystore).valid


def test_unsigned_document(example_text: str, keystore: KeyStore) -> None:
    report = inspect_signature(example_text, keystore)
    assert (report.valid, report.trusted, report.signed) == (False, False, False)
    assert report.digest == digest(example_text.encode())
    assert any("not signed" in r for r in report.reasons)


def test_invalid_document_is_a_report(keystore: KeyStore) -> None:
    report = inspect_signature("---\nmaml_version: 2\n---\n", keystore)
    assert not report.valid
    assert report.document_id is None
    assert any("invalid_document" in r for r in report.reasons)
    assert inspect_signature("no front matter", keystore).digest is None


def test_sign_rejects_invalid_document(keystore: KeyStore) -> None:
    with pytest.raises(InvalidDocument):
        sign_document("---\nmaml_version: '2'\n---\n", keystore)


def test_sign_without_any_key(example_text: str, tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="no signing key"):
        sign_document(example_text, other_store(tmp_path))


# -- tampering ----------------------------------------------------------------------------------


def _mutate(char: str, index: int) -> str:
    """A different printable ASCII character; base64 characters map to other base64 characters."""
    pool = B64 if char in B64 else PRINTABLE
    if char in pool:
        return pool[(pool.index(char) + 1 + index % (len(pool) - 1)) % len(pool)]
    return pool[index % len(pool)]  # newline or non-ASCII


def test_every_single_character_change_is_detected(example_text: str, keystore: KeyStore) -> None:
    signed = signed_text(example_text, keystore)
    assert inspect_signature(signed, keystore).valid
    start, end = value_span(signed)
    accepted: list[tuple[int, str, str]] = []
    crypto_rejections = 0
    for index, char in enumerate(signed):
        replacement = _mutate(char, index)
        assert replacement != char
        tampered = signed[:index] + replacement + signed[index + 1 :]
        try:
            report = inspect_signature(tampered, keystore)
        except Exception as exc:  # inspect_signature promises a report, never an exception
            accepted.append((index, char, f"raised {exc!r}"))
            continue
        if report.valid or report.trusted:
            accepted.append((index, char, replacement))
        if start <= index < end:
            # Still valid base64 of the right length and the same canonical bytes: only ML-DSA can tell.
            assert any("signature does not match" in r for r in report.reasons), (index, report.reasons)
            crypto_rejections += 1
    assert accepted == []
    assert crypto_rejections == end - start > 4000


def test_changed_digest(example_text: str, keystore: KeyStore) -> None:
    signed = signed_text(example_text, keystore)
    tampered = re.sub(r'digest: "sha256:[0-9a-f]{4}', 'digest: "sha256:0000', signed)
    assert tampered != signed
    report = inspect_signature(tampered, keystore)
    assert not report.valid
    assert any("digest mismatch" in r for r in report.reasons)


def test_digest_is_optional(example_text: str, keystore: KeyStore) -> None:
    signed = signed_text(example_text, keystore)
    without = re.sub(r"^  digest: .*\n", "", signed, flags=re.MULTILINE)
    assert "digest:" not in without
    assert inspect_signature(without, keystore).valid


def test_untrusted_key(example_text: str, keystore: KeyStore) -> None:
    info = keystore.generate(trust=False)
    assert not info.trusted
    assert not info.default
    signed = sign_document(example_text, keystore, key_id=info.key_id)
    assert signed.key_id == info.key_id
    report = inspect_signature(signed.signed_document, keystore)
    assert (report.valid, report.trusted, report.key_id) == (True, False, info.key_id)
    assert any("trust store" in r for r in report.reasons)
    public = keystore.public_key(info.key_id)
    assert public is not None
    keystore.trust.add(public)
    assert inspect_signature(signed.signed_document, keystore).trusted


def test_unknown_key(example_text: str, keystore: KeyStore, tmp_path: Path) -> None:
    signed = signed_text(example_text, keystore)
    other = other_store(tmp_path / "other")
    other.generate()
    report = inspect_signature(signed, other)
    assert (report.valid, report.trusted, report.signed) == (False, False, True)
    assert any("unknown key" in r for r in report.reasons)
    # Trusting A's public key in B makes it verify there.
    kid = keystore.default_key_id()
    assert kid is not None
    public = keystore.public_key(kid)
    assert public is not None
    other.trust.add(public)
    report = inspect_signature(signed, other_store(tmp_path / "other"))
    assert (report.valid, report.trusted) == (True, True)


@pytest.mark.parametrize("claimed", ["ML-DSA-44", "ML-DSA-87"])
def test_wrong_algorithm(example_text: str, keystore: KeyStore, claimed: str) -> None:
    signed = signed_text(example_text, keystore)
    tampered = signed.replace('algorithm: "ML-DSA-65"', f"algorithm: {claimed}")
    assert tampered != signed
    report = inspect_signature(tampered, keystore)
    assert not report.valid
    assert report.algorithm == claimed
    assert any("wrong algorithm" in r for r in report.reasons)


@pytest.mark.parametrize("claimed", ["Dilithium5", "ml-dsa-65", "ML-DSA-65 ", "Ed25519"])
def test_unsupported_algorithm(example_text: str, keystore: KeyStore, claimed: str) -> None:
    tampered = signed_text(example_text, keystore).replace(
        'algorithm: "ML-DSA-65"', f"algorithm: '{claimed}'"
    )
    report = inspect_signature(tampered, keystore)
    assert not report.valid
    assert any("unsupported algorithm" in r for r in report.reasons)


@pytest.mark.parametrize(
    "value", ["@@@@", "QUJD*", "QUJDR", "QUJD\\nQUJD"], ids=["symbols", "star", "pad", "nl"]
)
def test_malformed_base64(example_text: str, keystore: KeyStore, value: str) -> None:
    signed = signed_text(example_text, keystore)
    start, end = value_span(signed)
    report = inspect_signature(signed[:start] + value + signed[end:], keystore)
    assert not report.valid
    # A backslash escape is not allowed in the signature block at all (docs/maml.md).
    assert any("not valid base64" in r or "signature lines must read" in r for r in report.reasons), (
        report.reasons
    )


@pytest.mark.parametrize("cut", [4, 8, 4412])
def test_truncated_signature(example_text: str, keystore: KeyStore, cut: int) -> None:
    signed = signed_text(example_text, keystore)
    start, end = value_span(signed)
    assert end - start == 4412  # base64 of 3309 bytes
    report = inspect_signature(signed[: end - cut] + signed[end:], keystore)
    assert not report.valid
    assert any(f"signature is {3309 - cut // 4 * 3} bytes" in r for r in report.reasons), report.reasons


def test_value_from_another_document(example_text: str, keystore: KeyStore) -> None:
    signed = signed_text(example_text, keystore)
    other = signed_text(example_text.replace("1024", "2048"), keystore)
    start, end = value_span(signed)
    o_start, o_end = value_span(other)
    report = inspect_signature(signed[:start] + other[o_start:o_end] + signed[end:], keystore)
    assert not report.valid
    assert any("signature does not match" in r for r in report.reasons)


@pytest.mark.parametrize("key_id", ["../x", "*", "ABC", "../../../../etc/passwd"])
def test_malformed_key_id_in_signature(example_text: str, keystore: KeyStore, key_id: str) -> None:
    kid = keystore.default_key_id()
    assert kid is not None
    tampered = signed_text(example_text, keystore).replace(f'key_id: "{kid}"', f"key_id: '{key_id}'")
    report = inspect_signature(tampered, keystore)
    assert not report.valid
    assert any("malformed key id" in r for r in report.reasons)


def test_incomplete_signature_block(example_text: str, keystore: KeyStore) -> None:
    signed = signed_text(example_text, keystore)
    without_value = VALUE.sub("", signed)
    report = inspect_signature(without_value, keystore)
    assert not report.valid
    assert any("signature.value" in r for r in report.reasons)
    extra = signed.replace("  key_id:", "  note: hi\n  key_id:")
    assert not inspect_signature(extra, keystore).valid


def test_resigning_replaces_the_block(example_text: str, keystore: KeyStore) -> None:
    first = sign_document(example_text, keystore)
    second_key = keystore.generate()
    second = sign_document(first.signed_document, keystore, key_id=second_key.key_id)
    text = second.signed_document
    assert len(re.findall(r"^signature:", text, flags=re.MULTILINE)) == 1
    assert len(VALUE.findall(text)) == 1
    assert first.key_id not in text
    assert second.digest == first.digest
    assert parser.canonical_bytes(text) == example_text.encode()
    report = inspect_signature(text, keystore)
    assert (report.valid, report.key_id) == (True, second_key.key_id)


def test_signature_smuggled_as_nested_key_is_not_honoured(example_text: str, keystore: KeyStore) -> None:
    signed = signed_text(example_text, keystore)
    block = re.search(r"^signature:\n(?:  .*\n)+", signed, flags=re.MULTILINE)
    assert block is not None
    nested = "".join("  " + line + "\n" for line in block.group(0).splitlines())
    smuggled = signed.replace(block.group(0), "").replace("  level: strict\n", "  level: strict\n" + nested)
    parsed = parser.parse(smuggled)
    assert parsed.front_matter.signature is None
    assert "signature" in parsed.front_matter.verification
    report = inspect_signature(smuggled, keystore)
    assert (report.valid, report.signed) == (False, False)
    assert any("not signed" in r for r in report.reasons)


def test_signature_in_body_is_not_honoured(example_text: str, keystore: KeyStore) -> None:
    signed = signed_text(example_text, keystore)
    block = re.search(r"^signature:\n(?:  .*\n)+", signed, flags=re.MULTILINE)
    assert block is not None
    moved = signed.replace(block.group(0), "") + "\n" + block.group(0)
    report = inspect_signature(moved, keystore)
    assert (report.valid, report.signed) == (False, False)


def test_second_signature_entry_rejected(example_text: str, keystore: KeyStore) -> None:
    signed = signed_text(example_text, keystore)
    block = re.search(r"^signature:\n(?:  .*\n)+", signed, flags=re.MULTILINE)
    assert block is not None
    doubled = signed.replace("title: ", block.group(0) + "title: ", 1)
    report = inspect_signature(doubled, keystore)
    assert not report.valid
    assert any("duplicate key" in r for r in report.reasons)


# -- detached signatures ------------------------------------------------------------------------


def test_detached_round_trip(example_text: str, keystore: KeyStore) -> None:
    sig = sign_detached(example_text, keystore)
    assert sig["format"] == DETACHED_FORMAT
    assert sig["document_id"] == "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
    assert sig["key_id"] == keystore.default_key_id()
    assert sig["digest"] == digest(example_text.encode())
    report = inspect_signature(example_text, keystore, detached=json.dumps(sig))
    assert (report.valid, report.trusted, report.signed) == (True, True, True), report.reasons
    # Bytes in, CRLF, and an embedded signature in the document do not matter.
    assert inspect_signature(
        example_text.replace("\n", "\r\n").encode(), keystore, detached=json.dumps(sig)
    ).valid
    assert inspect_signature(signed_text(example_text, keystore), keystore, detached=json.dumps(sig)).valid


def test_detached_tampered_document(example_text: str, keystore: KeyStore) -> None:
    sig = sign_detached(example_text, keystore)
    for old, new in (
        ("shots: 1024", "shots: 1025"),
        ("agent://local]", "agent://*]"),
        ("h q[0];", "x q[0];"),
    ):
        tampered = example_text.replace(old, new)
        assert tampered != example_text
        report = inspect_signature(tampered, keystore, detached=json.dumps(sig))
        assert not report.valid, old
        assert any("digest mismatch" in r for r in report.reasons)
    sig.pop("digest")
    report = inspect_signature(example_text.replace("1024", "1025"), keystore, detached=json.dumps(sig))
    assert not report.valid
    assert any("signature does not match" in r for r in report.reasons)


@pytest.mark.parametrize(
    ("detached", "reason"),
    [
        ("not json", "not JSON"),
        ("[]", "format"),
        ('{"format": "other"}', "format"),
        (json.dumps({"format": DETACHED_FORMAT, "algorithm": "ML-DSA-65"}), "missing"),
        (json.dumps({"format": DETACHED_FORMAT, "algorithm": 1, "key_id": "x", "value": "x"}), "bad field"),
    ],
)
def test_detached_malformed(example_text: str, keystore: KeyStore, detached: str, reason: str) -> None:
    report = inspect_signature(example_text, keystore, detached=detached)
    assert not report.valid
    assert any(reason in r for r in report.reasons), report.reasons


_FIELDS = '"format": "maml-detached-signature/1", "algorithm": "ML-DSA-65", "key_id": "x", "value": "x"'


@pytest.mark.parametrize(
    ("detached", "reason"),
    [
        ("{" + _FIELDS + ', "n": ' + "9" * 5000 + "}", "number longer than 40 characters"),
        ("{" + _FIELDS + ', "n": ' + "[" * 20_000 + "]" * 20_000 + "}", "nested deeper than 16 levels"),
        ("{" + _FIELDS + ', "n": NaN}', "has NaN"),
        ("{" + _FIELDS + ', "n": 1e999999}', "too large"),
        (b"\xff{}", "not UTF-8"),
        ('{"a": "' + chr(0xD800) + '"}', "unpaired surrogates"),
    ],
    ids=["long-int", "deep", "nan", "huge-float", "not-utf8", "surrogate"],
)
def test_detached_signature_bombs_are_reasons(
    example_text: str, keystore: KeyStore, detached: str | bytes, reason: str
) -> None:
    report = inspect_signature(example_text, keystore, detached=detached)
    assert not report.valid
    assert len(report.reasons) == 1 and report.reasons[0].startswith("signature_invalid: "), report.reasons
    assert reason in report.reasons[0], report.reasons


def test_detached_signature_size_cap(example_text: str, keystore: KeyStore) -> None:
    sig = sign_detached(example_text, keystore)
    padded = json.dumps({**sig, "note": "x" * (DETACHED_MAX_BYTES - len(json.dumps(sig)) - 20)})
    assert len(padded) <= DETACHED_MAX_BYTES
    assert inspect_signature(example_text, keystore, detached=padded).valid
    with pytest.raises(RequestTooLarge) as info:
        inspect_signature(example_text, keystore, detached=padded + " " * DETACHED_MAX_BYTES)
    assert info.value.details["allowed"] == DETACHED_MAX_BYTES


HEAD = '---\nmaml_version: "2.0"\nid: "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"\ntype: workflow\n'


def test_detached_signature_covers_what_is_used(keystore: KeyStore) -> None:
    """Lines cut out as a `signature:` entry from inside another value are refused, not read."""
    original = HEAD + 'requires: {note: "small run,\nplease"}\n---\n# T\n'
    sig = json.dumps(sign_detached(original, keystore))
    injected = original.replace("small run,\n", 'small run,\nsignature: x", shots: 100000000, y: "\n')
    assert parser.canonical_bytes(injected) == parser.canonical_bytes(original)
    assert parser.parse(original).front_matter.requires.shots is None
    with pytest.raises(InvalidDocument, match="inside another value"):
        parser.parse(injected)
    report = inspect_signature(injected, keystore, detached=sig)
    assert not report.valid
    assert any("inside another value" in r for r in report.reasons)


def test_signing_keeps_the_front_matter_meaning(keystore: KeyStore) -> None:
    original = HEAD + 'title: "Deploy only after\nsignature: approved by ops\nhas been recorded"\n---\n# T\n'
    # Plain YAML reads the title with the line in it; the canonical rule would cut it: refused.
    with pytest.raises(InvalidDocument, match="inside another value"):
        parser.parse(original)
    with pytest.raises(InvalidDocument, match="inside another value"):
        signed_text(original, keystore)


def test_embedded_signature_covers_what_is_used(keystore: KeyStore) -> None:
    """The same injection against an embedded signature is caught."""
    original = HEAD + 'requires: {note: "small run,\nplease"}\n---\n# T\n'
    signed = signed_text(original, keystore)
    injected = signed.replace("small run,\n", 'small run,\nsignature: x", shots: 100000000, y: "\n')
    assert not inspect_signature(injected, keystore).valid


@pytest.mark.parametrize("document", [b"---\n\xff\n---\n", "---\n\x00\n---\n"], ids=["not-utf8", "nul"])
def test_inspect_never_raises_for_malformed_input(keystore: KeyStore, document: str | bytes) -> None:
    report = inspect_signature(document, keystore)
    assert not report.valid
    assert report.reasons


# -- key store ----------------------------------------------------------------------------------


def test_generated_key_files(keystore: KeyStore) -> None:
    kid = keystore.default_key_id()
    assert kid is not None
    assert keystore.ids() == [kid]
    private = keystore.path / f"{kid}.key.pem"
    public = keystore.path / f"{kid}.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE(keystore.path.stat().st_mode) == 0o700
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keystore.trust.contains(kid)
    pub = keystore.public_key(kid)
    assert pub is not None
    assert mldsa.key_id(pub) == kid
    assert mldsa.algorithm_of(pub) is mldsa.Algorithm.ML_DSA_65
    info = keystore.info(kid)
    assert (info.has_private, info.encrypted, info.trusted, info.default) == (True, False, True, True)


def test_encrypted_private_key(example_text: str, tmp_path: Path) -> None:
    trust = TrustStore(tmp_path / "trust")
    kid = KeyStore(tmp_path / "keys", trust, passphrase=b"pw").generate().key_id
    pem = (tmp_path / "keys" / f"{kid}.key.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")

    with pytest.raises(KeyStoreError, match="encrypted"):
        KeyStore(tmp_path / "keys", trust).private_key(kid)
    with pytest.raises(KeyStoreError, match="encrypted"):
        sign_document(example_text, KeyStore(tmp_path / "keys", trust))
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        KeyStore(tmp_path / "keys", trust, passphrase=b"pW").private_key(kid)

    right = KeyStore(tmp_path / "keys", trust, passphrase=b"pw")
    assert right.info(kid).encrypted
    signed = sign_document(example_text, right)
    assert signed.key_id == kid
    assert inspect_signature(signed.signed_document, KeyStore(tmp_path / "keys", trust)).trusted


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_private_key_readable_by_others_refused(example_text: str, keystore: KeyStore, mode: int) -> None:
    kid = keystore.default_key_id()
    assert kid is not None
    path = keystore.path / f"{kid}.key.pem"
    path.chmod(mode)
    fresh = KeyStore(keystore.path, keystore.trust)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        fresh.private_key(kid)
    with pytest.raises(KeyStoreError):
        sign_document(example_text, fresh)
    path.chmod(0o600)
    assert sign_document(example_text, fresh).key_id == kid


def test_missing_private_key(keystore: KeyStore) -> None:
    with pytest.raises(NotFound):
        keystore.private_key("0" * 32)


def test_keys_are_never_overwritten(keystore: KeyStore) -> None:
    kid = keystore.default_key_id()
    assert kid is not None
    path = keystore.path / f"{kid}.key.pem"
    before = path.read_bytes()
    with pytest.raises(KeyStoreError, match="never overwritten"):
        _write_new(path, b"attacker", 0o600)
    assert path.read_bytes() == before
    with pytest.raises(KeyStoreError, match="never overwritten"):
        _write_new(keystore.path / "default", b"0" * 32, 0o644)
    assert keystore.default_key_id() == kid
    # A second key is new files, and does not take over as default.
    second = keystore.generate()
    assert second.key_id != kid
    assert sorted(keystore.ids()) == sorted([kid, second.key_id])
    assert keystore.default_key_id() == kid
    assert path.read_bytes() == before


def test_write_new_creates_with_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "file"
    _write_new(path, b"data", 0o600)
    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "key_id", ["../x", "*", "ABC", "A" * 32, "0" * 31, "0" * 33, "../" + "0" * 29, "0" * 31 + "\n", ""]
)
def test_malformed_key_ids(keystore: KeyStore, key_id: str) -> None:
    with pytest.raises(KeyStoreError, match="malformed key id"):
        check_key_id(key_id)
    with pytest.raises(KeyStoreError, match="malformed key id"):
        keystore.private_key(key_id)
    with pytest.raises(KeyStoreError, match="malformed key id"):
        keystore.public_key(key_id)
    assert keystore.trust.get(key_id) is None
    assert not keystore.trust.contains(key_id)


@pytest.mark.parametrize("key_id", ["../x", "*", "ABC"])
def test_sign_with_malformed_key_id(example_text: str, keystore: KeyStore, key_id: str) -> None:
    with pytest.raises(KeyStoreError, match="malformed key id"):
        sign_document(example_text, keystore, key_id=key_id)
    with pytest.raises(KeyStoreError, match="malformed key id"):
        sign_detached(example_text, keystore, key_id=key_id)


def test_check_key_id_accepts_hex() -> None:
    assert check_key_id("0123456789abcdef" * 2) == "0123456789abcdef" * 2


# -- where the signature entry may stand ----------------------------------------------------------


def _block(signed: str) -> str:
    match = re.search(r"^signature:\n(?:  .*\n)+", signed, flags=re.MULTILINE)
    assert match is not None
    return match.group(0)


@pytest.mark.parametrize(
    "layout",
    [
        "requires:\n  qubits: 3\n{sig}# a comment\nother: 1\n",  # after a nested mapping, before a comment
        "libs:\n  - a\n  - b\n{sig}\nother: 1\n",  # after a block sequence, before a blank line
        "note: |\n  text\n{sig}other: 1\n",  # after a block scalar
        "{sig}note: plain\n",  # first entry
    ],
    ids=["nested-mapping", "sequence", "block-scalar", "first"],
)
def test_signature_entry_may_stand_between_entries(keystore: KeyStore, layout: str) -> None:
    unsigned = HEAD + layout.format(sig="") + "---\n# T\n"
    block = _block(signed_text(unsigned, keystore))
    moved = HEAD + layout.format(sig=block) + "---\n# T\n"
    assert parser.canonical_bytes(moved) == parser.canonical_bytes(unsigned)
    report = inspect_signature(moved, keystore)
    assert (report.valid, report.trusted) == (True, True), report.reasons


@pytest.mark.parametrize(
    "layout",
    [
        'title: "two\n{sig}lines"\n',  # inside a double-quoted scalar
        "title: 'two\n{sig}lines'\n",  # inside a single-quoted scalar
        "libs: [a,\n{sig}b]\n",  # inside a flow sequence
        "note: |+\n  kept\n\n{sig}\nother: 1\n",  # between a keep-chomped scalar's trailing blank lines
    ],
    ids=["double-quoted", "single-quoted", "flow", "keep-chomp"],
)
def test_signature_entry_inside_a_value_is_refused(keystore: KeyStore, layout: str) -> None:
    sig = "signature:\n  algorithm: ML-DSA-65\n"
    document = HEAD + layout.format(sig=sig) + "---\n# T\n"
    with pytest.raises(InvalidDocument, match="inside another value"):
        parser.parse(document)
    assert not inspect_signature(document, keystore).valid


def test_flow_front_matter_is_refused(keystore: KeyStore) -> None:
    uid = "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
    document = f'---\n{{maml_version: "2.0", id: "{uid}", type: workflow}}\n---\n'
    with pytest.raises(InvalidDocument, match="block mapping"):
        sign_document(document, keystore)


def test_signature_fields_are_quoted_strings(example_text: str, keystore: KeyStore) -> None:
    """An all-digit key id must stay a string for any YAML reader, so every field is quoted."""
    block = _block(signed_text(example_text, keystore))
    for line in block.splitlines()[1:]:
        _, _, value = line.strip().partition(": ")
        assert value.startswith('"') and value.endswith('"'), line
    import yaml

    data = yaml.safe_load(block)["signature"]
    assert all(isinstance(v, str) for v in data.values())


def test_detached_signature_for_another_document(example_text: str, keystore: KeyStore) -> None:
    sig = sign_detached(example_text, keystore)
    sig["document_id"] = "urn:uuid:00000000-0000-0000-0000-000000000000"
    report = inspect_signature(example_text, keystore, detached=json.dumps(sig))
    assert not report.valid
    assert any("is for document urn:uuid:00000000" in r for r in report.reasons)


def test_an_unsupported_algorithm_is_not_echoed_whole() -> None:
    """A detached signature may carry up to 64 KiB: its `algorithm` is shortened in the message."""
    from mcp_server.crypto import mldsa

    with pytest.raises(SignatureInvalid) as info:
        mldsa.parse_algorithm("ML-DSA-" + "9" * 70_000)
    assert len(str(info.value)) < 200 and "expected one of ML-DSA-44" in str(info.value)
