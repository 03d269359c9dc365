"""Sealed documents (format maml-sealed/1): round trips, tampering, sizes, recipients, nonces."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from mcp_server import sealing
from mcp_server.crypto import kem
from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import InvalidDocument, KeyStoreError, NotFound, RequestTooLarge
from mcp_server.maml import parser
from mcp_server.signing import sign_document, verify_signature

OTHER_ID = "urn:uuid:00000000-1111-4222-8333-444444444444"


@dataclasses.dataclass
class People:
    store: kem.KemKeyStore  # holds the private keys of alice, bob and carol
    alice: kem.PublicKey
    bob: kem.PublicKey
    carol: kem.PublicKey


@pytest.fixture
def people(tmp_path: Path) -> People:
    store = kem.KemKeyStore(tmp_path / "kem", b"passphrase")
    keys = [store.public_key(store.generate().key_id) for _ in range(3)]
    assert all(k is not None for k in keys)
    return People(store, *keys)  # type: ignore[arg-type]


def only(tmp_path: Path, *publics: kem.PublicKey, holding: kem.PrivateKey | None = None) -> kem.KemKeyStore:
    """A store holding nothing but the given public keys (and one private key if given)."""
    store = kem.KemKeyStore(tmp_path / f"only-{len(list(tmp_path.iterdir()))}")
    for public in publics:
        store.add_public(public)
    if holding is not None:
        store.path.mkdir(parents=True, exist_ok=True)
        kid = holding.public_key().key_id
        kem._write_new(store.path / f"{kid}.key.pem", holding.pem(None), 0o600)
        store.add_public(holding.public_key())
    return store


def reseal(text: str, **changes: object) -> str:
    return sealing.render(dataclasses.replace(sealing.parse_sealed(text), **changes))  # type: ignore[arg-type]


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def fails_authentication(text: str, store: kem.KemKeyStore) -> None:
    with pytest.raises(InvalidDocument, match="authentication"):
        sealing.open_sealed(text, store)


# -- round trips ----------------------------------------------------------------------------------


def test_round_trip_one_recipient(people: People, example_text: str) -> None:
    sealed = sealing.seal(example_text, [people.alice])
    assert "Greenberger" not in sealed and "GHZ" not in sealed
    opened = sealing.open_sealed(sealed, people.store)
    assert opened.document == example_text and opened.key_id == people.alice.key_id
    assert opened.parsed.id == sealing.parse_sealed(sealed).document_id


def test_round_trip_several_recipients_each_opens(people: People, example_text: str, tmp_path: Path) -> None:
    sealed = sealing.seal(example_text, [people.alice, people.bob, people.carol])
    assert sealing.parse_sealed(sealed).recipient_ids == [
        people.alice.key_id,
        people.bob.key_id,
        people.carol.key_id,
    ]
    for name in ("alice", "bob", "carol"):
        private = people.store.private_key(getattr(people, name).key_id)
        opened = sealing.open_sealed(sealed, only(tmp_path, holding=private))
        assert opened.document == example_text and opened.key_id == getattr(people, name).key_id


def test_exact_bytes_survive_including_crlf(people: People, example_text: str) -> None:
    crlf = example_text.replace("\n", "\r\n")
    assert sealing.open_sealed(sealing.seal(crlf, [people.alice]), people.store).document == crlf
    # the sealed text itself may travel with CRLF line ends
    sealed = sealing.seal(example_text, [people.alice]).replace("\n", "\r\n")
    assert sealing.open_sealed(sealed, people.store).document == example_text


def test_signed_then_sealed_keeps_a_valid_signature(
    people: People, example_text: str, keystore: KeyStore
) -> None:
    signed = sign_document(example_text, keystore).signed_document
    opened = sealing.open_sealed(sealing.seal(signed, [people.alice]), people.store)
    assert opened.document == signed
    kid, _ = verify_signature(opened.parsed, keystore)
    assert kid == keystore.default_key_id()


def test_format_is_as_documented(people: People, example_text: str) -> None:
    sealed = sealing.seal(example_text, [people.alice, people.bob])
    pattern = (
        r'---\nformat: "maml-sealed/1"\ndocument_id: "urn:uuid:[0-9a-f-]{36}"\n'
        r'content_cipher: "AES-256-GCM"\n'
        r'key_wrap: "ML-KEM-768\+X25519/HKDF-SHA256/AES-256-GCM"\nrecipients:\n'
        + r'  - key_id: "[0-9a-f]{32}"\n    mlkem_ciphertext: "[A-Za-z0-9+/]{1451}="\n'
        r'    x25519_ephemeral: "[A-Za-z0-9+/]{43}="\n    wrapped_key: "[A-Za-z0-9+/]{64}"\n'
        * 2
        + r'nonce: "[A-Za-z0-9+/]{16}"\n---\n[A-Za-z0-9+/]+={0,2}\n'
    )
    assert re.fullmatch(pattern, sealed)
    parsed = sealing.parse_sealed(sealed)
    assert len(parsed.ciphertext) == len(example_text.encode()) + 16


# -- recipients -----------------------------------------------------------------------------------


def test_wrong_recipient_cannot_open(people: People, example_text: str, tmp_path: Path) -> None:
    sealed = sealing.seal(example_text, [people.alice])
    stranger = only(tmp_path, people.alice, holding=kem.generate())  # knows alice's public key only
    with pytest.raises(NotFound, match="not sealed for any recipient key held here"):
        sealing.open_sealed(sealed, stranger)


def test_recipient_key_of_the_wrong_kind(people: People, keystore: KeyStore) -> None:
    signing_id = keystore.default_key_id()
    assert signing_id is not None
    with pytest.raises(KeyStoreError, match="ML-DSA signing key, not a recipient"):
        sealing.resolve_recipients([people.alice.key_id, signing_id], people.store, keystore)
    with pytest.raises(KeyStoreError, match="not a recipient"):
        kem.load_public_pem(keystore.export_public(signing_id))
    with pytest.raises(NotFound, match="unknown recipient key"):
        sealing.resolve_recipients(["0" * 32], people.store, keystore)
    with pytest.raises(KeyStoreError, match="malformed key id"):
        sealing.resolve_recipients(["../../etc/passwd"], people.store, keystore)


def test_recipient_count_and_duplicates(people: People, example_text: str) -> None:
    with pytest.raises(InvalidDocument, match="at least one"):
        sealing.seal(example_text, [])
    with pytest.raises(InvalidDocument, match="twice"):
        sealing.seal(example_text, [people.alice, people.alice])
    many = [kem.generate().public_key() for _ in range(sealing.MAX_RECIPIENTS + 1)]
    with pytest.raises(RequestTooLarge):
        sealing.seal(example_text, many)
    sealed = sealing.seal(example_text, [people.alice, people.bob])
    slots = sealing.parse_sealed(sealed).recipients
    with pytest.raises(InvalidDocument, match="twice"):
        sealing.parse_sealed(reseal(sealed, recipients=(slots[0], slots[0])))


# -- header fields edited or swapped --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "maml-sealed/2"),
        ("content_cipher", "AES-128-GCM"),
        ("key_wrap", "X25519/HKDF-SHA256/AES-256-GCM"),
        ("document_id", "urn:uuid:not-a-uuid"),
    ],
)
def test_unsupported_or_malformed_header_values_are_refused(
    people: People, example_text: str, field: str, value: str
) -> None:
    sealed = sealing.seal(example_text, [people.alice])
    edited, count = re.subn(rf'^{field}: "[^"]*"$', f'{field}: "{value}"', sealed, flags=re.M)
    assert count == 1
    with pytest.raises(InvalidDocument, match="sealed document"):
        sealing.open_sealed(edited, people.store)


def test_document_id_edited_or_swapped(people: People, example_text: str) -> None:
    sealed = sealing.seal(example_text, [people.alice])
    fails_authentication(reseal(sealed, document_id=OTHER_ID), people.store)
    # a header from another sealed document with another id (the rest kept) fails as well
    other = sealing.seal(
        example_text.replace(sealing.parse_sealed(sealed).document_id, OTHER_ID), [people.alice]
    )
    fails_authentication(reseal(sealed, document_id=sealing.parse_sealed(other).document_id), people.store)


def test_recipient_list_edited(people: People, example_text: str) -> None:
    sealed = sealing.seal(example_text, [people.alice, people.bob])
    a, b = sealing.parse_sealed(sealed).recipients
    carol_slot = sealing.parse_sealed(sealing.seal(example_text, [people.carol])).recipients[0]
    for recipients in [
        (b, a),  # reordered
        (a,),  # one removed
        (a, b, carol_slot),  # one added (a real slot for carol from another seal)
        (dataclasses.replace(a, key_id=people.carol.key_id), b),  # a key id changed to one we hold
    ]:
        fails_authentication(reseal(sealed, recipients=recipients), people.store)


def test_nonce_swapped_from_another_seal(people: People, example_text: str) -> None:
    sealed = sealing.seal(example_text, [people.alice])
    other = sealing.parse_sealed(sealing.seal(example_text, [people.alice]))
    fails_authentication(reseal(sealed, nonce=other.nonce), people.store)
    fails_authentication(reseal(sealed, recipients=other.recipients), people.store)
    fails_authentication(reseal(sealed, ciphertext=other.ciphertext), people.store)


def test_document_id_must_match_the_document_inside(people: People, example_text: str) -> None:
    forged = sealing.render(sealing.seal_bytes(example_text.encode(), OTHER_ID, [people.alice]))
    with pytest.raises(InvalidDocument, match="header says"):
        sealing.open_sealed(forged, people.store)


# -- flipped bits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["ciphertext-start", "ciphertext-middle", "tag", "nonce"])
def test_flipped_bit_in_content(people: People, example_text: str, where: str) -> None:
    sealed = sealing.seal(example_text, [people.alice])
    parsed = sealing.parse_sealed(sealed)
    ct, n = parsed.ciphertext, len(parsed.ciphertext)
    changes = {
        "ciphertext-start": {"ciphertext": flip(ct, 0)},
        "ciphertext-middle": {"ciphertext": flip(ct, (n - 16) // 2, 7)},
        "tag": {"ciphertext": flip(ct, n - 1, 3)},
        "nonce": {"nonce": flip(parsed.nonce, 11, 5)},
    }[where]
    fails_authentication(reseal(sealed, **changes), people.store)


@pytest.mark.parametrize(
    ("field", "index"),
    [
        ("wrapped_key", 0),
        ("wrapped_key", 47),
        ("mlkem_ciphertext", 0),
        ("mlkem_ciphertext", 1087),
        ("x25519_ephemeral", 5),
    ],
)
def test_flipped_bit_in_a_wrapped_key(people: People, example_text: str, field: str, index: int) -> None:
    sealed = sealing.seal(example_text, [people.alice, people.bob])
    a, b = sealing.parse_sealed(sealed).recipients
    damaged = dataclasses.replace(a, **{field: flip(getattr(a, field), index)})
    fails_authentication(reseal(sealed, recipients=(damaged, b)), only_private(people, people.alice))


def only_private(people: People, who: kem.PublicKey) -> kem.KemKeyStore:
    """A store with just `who`'s private key, so no other slot can rescue the opening."""
    store = kem.KemKeyStore(people.store.path.parent / f"just-{who.key_id}")
    if not store.path.exists():
        store.path.mkdir()
        kem._write_new(
            store.path / f"{who.key_id}.key.pem", people.store.private_key(who.key_id).pem(None), 0o600
        )
        store.add_public(who)
    return store


# -- truncated, malformed, oversized --------------------------------------------------------------


def test_truncated_input_never_opens(people: People, example_text: str) -> None:
    sealed = sealing.seal(example_text, [people.alice])
    body_start = sealed.index("\n---\n") + 5
    cuts = [
        *range(0, body_start, 53),
        *range(body_start, len(sealed) - 1, 97),
        len(sealed) - 2,
        len(sealed) - 5,
    ]
    for cut in cuts:
        with pytest.raises(InvalidDocument, match="sealed document"):
            sealing.open_sealed(sealed[:cut], people.store)
    # only the final newline is optional
    assert sealing.open_sealed(sealed[:-1], people.store).document == example_text


@pytest.mark.parametrize(
    "text",
    ["", "hello", "---\n", "---\nformat: maml-sealed/1\n", "\u00e9" * 10, b"\xff\xfe"],
)
def test_garbage_is_invalid(people: People, text: str | bytes) -> None:
    with pytest.raises(InvalidDocument, match="sealed document"):
        sealing.open_sealed(text, people.store)


def test_text_after_the_ciphertext_is_refused(people: People, example_text: str) -> None:
    sealed = sealing.seal(example_text, [people.alice])
    with pytest.raises(InvalidDocument, match="after the ciphertext"):
        sealing.open_sealed(sealed + "more\n", people.store)


def test_oversized_input_refused_before_parsing(people: People, example_text: str) -> None:
    limits = parser.Limits(max_bytes=64 * 1024)
    cap = sealing.max_sealed_bytes(limits.max_bytes)
    with pytest.raises(RequestTooLarge) as info:
        sealing.open_sealed("x" * (cap + 1), people.store, limits=limits)  # not even a header: size first
    assert info.value.details == {"requested": cap + 1, "allowed": cap}
    with pytest.raises(RequestTooLarge):
        sealing.seal(example_text + "x" * limits.max_bytes, [people.alice], limits=limits)


def test_largest_document_for_most_recipients_fits_the_cap(people: People, example_text: str) -> None:
    limits = parser.Limits(max_bytes=len(example_text.encode()))
    recipients = [kem.generate().public_key() for _ in range(sealing.MAX_RECIPIENTS)]
    sealed = sealing.seal(example_text, recipients, limits=limits)
    assert len(sealed.encode()) <= sealing.max_sealed_bytes(limits.max_bytes)


# -- nonces and keys ------------------------------------------------------------------------------


def test_nonce_source_unique_across_100000_draws() -> None:
    """100,000 draws from `fresh_nonce`, the nonce generator every seal calls (the next test checks
    that it is), are all distinct. Not 100,000 full seals: that would take about a minute."""
    nonces = {sealing.fresh_nonce() for _ in range(100_000)}
    assert len(nonces) == 100_000
    assert all(len(n) == 12 for n in list(nonces)[:10])


def test_seals_use_fresh_nonce_and_key_and_2000_seals_differ(
    people: People, example_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seals = [sealing.seal_bytes(b"same bytes", OTHER_ID, [people.alice]) for _ in range(2000)]
    assert len({s.nonce for s in seals}) == 2000
    assert len({s.ciphertext for s in seals}) == 2000
    assert len({s.recipients[0].wrapped_key for s in seals}) == 2000
    monkeypatch.setattr(sealing, "fresh_nonce", lambda: b"N" * 12)
    monkeypatch.setattr(sealing, "fresh_content_key", lambda: b"K" * 32)
    fixed = sealing.seal_bytes(b"same bytes", OTHER_ID, [people.alice])
    assert fixed.nonce == b"N" * 12
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aad = sealing.associated_data(OTHER_ID, [people.alice.key_id])
    assert AESGCM(b"K" * 32).decrypt(fixed.nonce, fixed.ciphertext, aad) == b"same bytes"
