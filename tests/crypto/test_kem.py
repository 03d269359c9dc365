"""The hybrid KEM (ML-KEM-768 + X25519) and recipient key files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mcp_server.crypto import kem
from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import InvalidDocument, KeyStoreError, NotFound


def test_encapsulate_decapsulate_agree_and_are_fresh() -> None:
    private = kem.generate()
    a, b = kem.encapsulate(private.public_key()), kem.encapsulate(private.public_key())
    assert kem.decapsulate(private, a.mlkem_ciphertext, a.x25519_ephemeral) == a.key
    assert len(a.key) == 32 and a.key != b.key and a.x25519_ephemeral != b.x25519_ephemeral
    assert kem.decapsulate(kem.generate(), a.mlkem_ciphertext, a.x25519_ephemeral) != a.key


def test_combiner_is_the_documented_hkdf() -> None:
    """KEK = HKDF-SHA256(salt none, IKM ss_M || ss_X, info LABEL || ct_M || ct_X || pk_M || pk_X)."""
    public = kem.generate().public_key()
    ss_m, ss_x, ct_m, ct_x = os.urandom(32), os.urandom(32), os.urandom(1088), os.urandom(32)
    raw_x = public.x25519.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    info = kem.LABEL + ct_m + ct_x + public.mlkem.public_bytes_raw() + raw_x
    expected = HKDF(hashes.SHA256(), 32, None, info).derive(ss_m + ss_x)
    assert kem.combine(ss_m, ss_x, ct_m, ct_x, public) == expected
    # every input counts: change any one and the key changes
    other = kem.generate().public_key()
    variants = [
        (os.urandom(32), ss_x, ct_m, ct_x, public),
        (ss_m, os.urandom(32), ct_m, ct_x, public),
        (ss_m, ss_x, os.urandom(1088), ct_x, public),
        (ss_m, ss_x, ct_m, os.urandom(32), public),
        (ss_m, ss_x, ct_m, ct_x, other),
    ]
    assert all(kem.combine(*v) != expected for v in variants)


def test_decapsulate_refuses_wrong_lengths_and_low_order_points() -> None:
    private = kem.generate()
    enc = kem.encapsulate(private.public_key())
    with pytest.raises(InvalidDocument):
        kem.decapsulate(private, enc.mlkem_ciphertext[:-1], enc.x25519_ephemeral)
    with pytest.raises(InvalidDocument):
        kem.decapsulate(private, enc.mlkem_ciphertext, bytes(32))  # the all-zero (low-order) point


def test_generate_stores_encrypted_0600_and_key_id_is_the_fingerprint(tmp_path: Path) -> None:
    store = kem.KemKeyStore(tmp_path / "kem", b"correct horse")
    info = store.generate()
    assert info.encrypted and info.has_private and info.algorithm == "ML-KEM-768+X25519"
    key_file = tmp_path / "kem" / f"{info.key_id}.key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "kem").stat().st_mode) == 0o700
    assert key_file.read_bytes().count(b"BEGIN ENCRYPTED PRIVATE KEY") == 2
    public = store.public_key(info.key_id)
    assert public is not None
    der = b"".join(
        k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for k in (public.mlkem, public.x25519)
    )
    assert info.key_id == hashlib.sha256(der).hexdigest()[:32]
    # a fresh store (no cache) needs the passphrase, and the right one
    assert kem.KemKeyStore(tmp_path / "kem", b"correct horse").private_key(info.key_id).public_key() == public
    with pytest.raises(KeyStoreError, match="MACROSLOW_KEY_PASSPHRASE"):
        kem.KemKeyStore(tmp_path / "kem").private_key(info.key_id)
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        kem.KemKeyStore(tmp_path / "kem", b"wrong").private_key(info.key_id)


def test_unencrypted_without_passphrase_and_group_readable_refused(tmp_path: Path) -> None:
    store = kem.KemKeyStore(tmp_path / "kem")
    info = store.generate()
    assert not info.encrypted
    key_file = tmp_path / "kem" / f"{info.key_id}.key.pem"
    os.chmod(key_file, 0o640)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        kem.KemKeyStore(tmp_path / "kem").private_key(info.key_id)


def test_keys_are_never_overwritten(tmp_path: Path) -> None:
    store = kem.KemKeyStore(tmp_path / "kem")
    info = store.generate()
    key_file = tmp_path / "kem" / f"{info.key_id}.key.pem"
    before = key_file.read_bytes()
    with pytest.raises(KeyStoreError, match="never overwritten"):
        kem._write_new(key_file, b"x", 0o600)
    assert key_file.read_bytes() == before


def test_export_import_round_trip(tmp_path: Path) -> None:
    alice = kem.KemKeyStore(tmp_path / "alice")
    info = alice.generate()
    pem = alice.export_public(info.key_id)
    bob = kem.KemKeyStore(tmp_path / "bob")
    assert bob.add_public(kem.load_public_pem(pem)) == info.key_id
    assert bob.add_public(kem.load_public_pem(pem)) == info.key_id  # idempotent
    assert bob.info(info.key_id).has_private is False
    assert bob.public_key(info.key_id) == alice.public_key(info.key_id)
    with pytest.raises(NotFound):
        bob.private_key(info.key_id)


def test_a_key_of_the_wrong_kind_is_refused(keystore: KeyStore) -> None:
    kid = keystore.default_key_id()
    assert kid is not None
    mldsa_pem = keystore.export_public(kid)
    with pytest.raises(KeyStoreError, match="not a recipient"):
        kem.load_public_pem(mldsa_pem)
    private = kem.generate()
    only_mlkem = (
        private.public_key().pem().split(b"-----END PUBLIC KEY-----")[0] + b"-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(KeyStoreError, match="not a recipient"):
        kem.load_public_pem(only_mlkem)
    swapped = b"".join(reversed(kem.pem_blocks(private.public_key().pem())))
    with pytest.raises(KeyStoreError, match="not a recipient"):
        kem.load_public_pem(swapped)
    with pytest.raises(KeyStoreError, match="not a recipient"):
        kem.load_public_pem(mldsa_pem + mldsa_pem)
