"""Hybrid KEM for sealing: ML-KEM-768 (FIPS 203) + X25519, and recipient key files.

The one seam to the KEM backends (`cryptography` >= 48). A recipient key is a pair of key pairs,
ML-KEM-768 and X25519. Encapsulating to it runs both KEMs and combines the two shared secrets with

    KEK = HKDF-SHA256(salt = none (32 zero bytes), IKM = ss_mlkem || ss_x25519,
                      info = LABEL || ct_mlkem || ct_x25519 || pk_mlkem || pk_x25519, L = 32)

where ct_x25519 is the ephemeral X25519 public key and pk_* are the recipient's raw public keys. All
inputs have fixed lengths (32, 32, 1088, 32, 1184, 32 bytes), so the concatenation is unambiguous.
The KEK stays secret while either shared secret does: breaking it needs both ML-KEM-768 and X25519.
Binding both ciphertexts and both public keys means no ciphertext can be reused under another key.

Key files (directory `<home>/kem`, created mode 0700):

    <key_id>.key.pem   two PKCS#8 PEM blocks (ML-KEM-768, then X25519), mode 0600, encrypted with
                       MACROSLOW_KEY_PASSPHRASE when it is set; only for own key pairs
    <key_id>.pub.pem   two SubjectPublicKeyInfo PEM blocks in the same order: own or imported

Key id: the first 16 bytes of SHA-256 over SPKI-DER(ML-KEM-768) || SPKI-DER(X25519), as 32 hex
digits. Files are created with O_EXCL: nothing here overwrites a key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mcp_server.crypto.keys import _write_new, check_key_id, read_private_key_file
from mcp_server.errors import InvalidDocument, KeyStoreError, NotFound

ALGORITHM = "ML-KEM-768+X25519"
LABEL = b"macroslow-mcp/hybrid-kem/ML-KEM-768+X25519/HKDF-SHA256/v1"
MLKEM_CIPHERTEXT_BYTES = 1088
MLKEM_PUBLIC_BYTES = 1184
X25519_BYTES = 32
SHARED_KEY_BYTES = 32

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


@dataclass(frozen=True)
class PublicKey:
    mlkem: MLKEM768PublicKey
    x25519: X25519PublicKey

    @functools.cached_property
    def key_id(self) -> str:
        return hashlib.sha256(self._spki(self.mlkem) + self._spki(self.x25519)).hexdigest()[:32]

    @staticmethod
    def _spki(key: MLKEM768PublicKey | X25519PublicKey) -> bytes:
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def pem(self) -> bytes:
        fmt = serialization.PublicFormat.SubjectPublicKeyInfo
        return self.mlkem.public_bytes(serialization.Encoding.PEM, fmt) + self.x25519.public_bytes(
            serialization.Encoding.PEM, fmt
        )


@dataclass(frozen=True)
class PrivateKey:
    mlkem: MLKEM768PrivateKey
    x25519: X25519PrivateKey

    @functools.cached_property
    def public(self) -> PublicKey:
        return PublicKey(self.mlkem.public_key(), self.x25519.public_key())

    def public_key(self) -> PublicKey:
        return self.public

    def pem(self, passphrase: bytes | None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        enc, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
        return self.mlkem.private_bytes(enc, fmt, encryption) + self.x25519.private_bytes(
            enc, fmt, encryption
        )


def generate() -> PrivateKey:
    return PrivateKey(MLKEM768PrivateKey.generate(), X25519PrivateKey.generate())


@dataclass(frozen=True)
class Encapsulation:
    mlkem_ciphertext: bytes  # 1088 bytes
    x25519_ephemeral: bytes  # 32 bytes: the ephemeral X25519 public key
    key: bytes  # the 32-byte key-encryption key (KEK)


def combine(ss_mlkem: bytes, ss_x25519: bytes, ct_mlkem: bytes, ct_x25519: bytes, public: PublicKey) -> bytes:
    """The documented combiner (module docstring): HKDF-SHA256 over both secrets and transcripts."""
    info = (
        LABEL
        + ct_mlkem
        + ct_x25519
        + public.mlkem.public_bytes_raw()
        + public.x25519.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return HKDF(algorithm=hashes.SHA256(), length=SHARED_KEY_BYTES, salt=None, info=info).derive(
        ss_mlkem + ss_x25519
    )


def encapsulate(public: PublicKey) -> Encapsulation:
    ss_mlkem, ct_mlkem = public.mlkem.encapsulate()
    ephemeral = X25519PrivateKey.generate()
    ct_x25519 = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    ss_x25519 = ephemeral.exchange(public.x25519)
    return Encapsulation(ct_mlkem, ct_x25519, combine(ss_mlkem, ss_x25519, ct_mlkem, ct_x25519, public))


def decapsulate(private: PrivateKey, ct_mlkem: bytes, ct_x25519: bytes) -> bytes:
    """The KEK for these ciphertexts. A ciphertext of the wrong length or an X25519 point of low order
    is `InvalidDocument`; a damaged but well-formed ML-KEM ciphertext yields an unrelated key
    (ML-KEM's implicit rejection), which then fails the key wrap's authentication."""
    if len(ct_mlkem) != MLKEM_CIPHERTEXT_BYTES or len(ct_x25519) != X25519_BYTES:
        raise InvalidDocument("sealed document: key encapsulation has the wrong length")
    try:
        ss_mlkem = private.mlkem.decapsulate(ct_mlkem)
        ss_x25519 = private.x25519.exchange(X25519PublicKey.from_public_bytes(ct_x25519))
    except ValueError:
        raise InvalidDocument("sealed document: invalid key encapsulation") from None
    return combine(ss_mlkem, ss_x25519, ct_mlkem, ct_x25519, private.public_key())


# -- key files ------------------------------------------------------------------------------------


def pem_blocks(data: bytes) -> list[bytes]:
    return [m.group(0) for m in _PEM_BLOCK.finditer(data)]


def load_public_pem(data: bytes) -> PublicKey:
    """A recipient public key: an ML-KEM-768 SPKI block followed by an X25519 SPKI block."""
    blocks = pem_blocks(data)
    wrong_kind = KeyStoreError(
        "not a recipient (KEM) public key: expected an ML-KEM-768 and an X25519 public key in PEM "
        "(from `macroslow-mcp keys export` of a key made by `keys generate --kem`)"
    )
    if len(blocks) != 2:
        raise wrong_kind
    try:
        first, second = (serialization.load_pem_public_key(b) for b in blocks)
    except ValueError:
        raise wrong_kind from None
    if not isinstance(first, MLKEM768PublicKey) or not isinstance(second, X25519PublicKey):
        raise wrong_kind
    return PublicKey(first, second)


def load_private_pem(data: bytes, passphrase: bytes | None, key_id: str) -> PrivateKey:
    blocks = pem_blocks(data)
    if len(blocks) != 2:
        raise KeyStoreError(f"KEM key file {key_id} is damaged: expected two PEM blocks")
    encrypted = b"ENCRYPTED PRIVATE KEY" in data
    if encrypted and passphrase is None:
        raise KeyStoreError(f"private key {key_id} is encrypted; set MACROSLOW_KEY_PASSPHRASE")
    try:
        first, second = (
            serialization.load_pem_private_key(b, passphrase if encrypted else None) for b in blocks
        )
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"cannot load private key {key_id}: wrong passphrase or damaged file") from exc
    if not isinstance(first, MLKEM768PrivateKey) or not isinstance(second, X25519PrivateKey):
        raise KeyStoreError(f"key file {key_id} is not an ML-KEM-768 + X25519 key pair")
    return PrivateKey(first, second)


@dataclass(frozen=True)
class KemKeyInfo:
    key_id: str
    algorithm: str
    has_private: bool
    encrypted: bool


class KemKeyStore:
    """Recipient key pairs (own) and recipient public keys (own and imported), in one directory."""

    def __init__(self, path: Path, passphrase: bytes | None = None) -> None:
        self.path = path
        self._passphrase = passphrase
        self._private_cache: dict[str, PrivateKey] = {}
        self._public_cache: dict[str, PublicKey] = {}

    def _private_file(self, key_id: str) -> Path:
        return self.path / f"{check_key_id(key_id)}.key.pem"

    def _public_file(self, key_id: str) -> Path:
        return self.path / f"{check_key_id(key_id)}.pub.pem"

    def ids(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name.removesuffix(".pub.pem") for p in self.path.glob("*.pub.pem"))

    def has_private(self, key_id: str) -> bool:
        return key_id in self._private_cache or self._private_file(key_id).is_file()

    def public_key(self, key_id: str) -> PublicKey | None:
        """The recipient public key `key_id`, or None if unknown here."""
        if key_id in self._public_cache:
            return self._public_cache[key_id]
        try:
            key = load_public_pem(self._public_file(key_id).read_bytes())
        except FileNotFoundError:
            return None
        if key.key_id != key_id:
            raise KeyStoreError(f"KEM key file {key_id} holds a different key")
        self._public_cache[key_id] = key
        return key

    def private_key(self, key_id: str) -> PrivateKey:
        if key_id in self._private_cache:
            return self._private_cache[key_id]
        data = read_private_key_file(
            self._private_file(key_id), f"no private KEM key {key_id} in this server's key store"
        )
        key = load_private_pem(data, self._passphrase, key_id)
        if key.public_key().key_id != key_id:
            raise KeyStoreError(f"KEM key file {key_id} holds a different key")
        self._private_cache[key_id] = key
        return key

    def info(self, key_id: str) -> KemKeyInfo:
        if self.public_key(key_id) is None:
            raise NotFound(f"unknown KEM key {key_id}")
        has_private = self.has_private(key_id)
        encrypted = has_private and b"ENCRYPTED" in self._private_file(key_id).read_bytes()[:64]
        return KemKeyInfo(key_id, ALGORITHM, has_private, encrypted)

    def list(self) -> list[KemKeyInfo]:
        return [self.info(kid) for kid in self.ids()]

    def _mkdir(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    def generate(self) -> KemKeyInfo:
        """Create an ML-KEM-768 + X25519 key pair (private part encrypted when a passphrase is set)."""
        private = generate()
        public = private.public_key()
        kid = public.key_id
        self._mkdir()
        _write_new(self._private_file(kid), private.pem(self._passphrase), 0o600)
        _write_new(self._public_file(kid), public.pem(), 0o644)
        return self.info(kid)

    def add_public(self, public: PublicKey) -> str:
        """Import a recipient public key (idempotent); returns its key id."""
        kid = public.key_id
        if not self._public_file(kid).is_file():
            self._mkdir()
            _write_new(self._public_file(kid), public.pem(), 0o644)
        return kid

    def export_public(self, key_id: str) -> bytes:
        public = self.public_key(check_key_id(key_id))
        if public is None:
            raise NotFound(f"unknown KEM key {key_id}")
        return public.pem()
