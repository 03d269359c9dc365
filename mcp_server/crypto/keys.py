"""Signing keys on disk and the trust store.

Layout (all paths configurable through `Settings`):

    keys/<key_id>.key.pem   PKCS#8 private key, mode 0600; encrypted when a passphrase is set
    keys/<key_id>.pub.pem   SubjectPublicKeyInfo public key
    keys/default            the key id `sign` uses when none is named
    trust/<key_id>.pub.pem  public keys whose signatures count ("trusted")

Files are created with O_EXCL: nothing here ever overwrites a key. A private key file readable by
group or others is refused, as ssh does.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from mcp_server.crypto import mldsa
from mcp_server.crypto.mldsa import Algorithm, PrivateKey, PublicKey
from mcp_server.errors import KeyStoreError, NotFound

log = logging.getLogger(__name__)
_KEY_ID = re.compile(r"^[0-9a-f]{32}$")


def check_key_id(key_id: str) -> str:
    """Key ids are 32 lowercase hex digits; anything else (paths, wildcards) is refused."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise KeyStoreError(f"malformed key id {key_id!r}: expected 32 hex digits")
    return key_id


def _write_new(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        log.error("refusing to overwrite %s", path)
        raise KeyStoreError(f"key file {path.name} already exists; keys are never overwritten") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, mode)


def load_public_pem(data: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyStoreError("not a PEM public key") from exc
    try:
        mldsa.algorithm_of(key)  # type: ignore[arg-type]
    except KeyStoreError:
        raise KeyStoreError("public key is not an ML-DSA key") from None
    return key  # type: ignore[return-value]


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def read_private_key_file(path: Path, missing: str) -> bytes:
    """A private key file's bytes; `NotFound(missing)` when absent, `KeyStoreError` when other users
    may read or write it (signing and recipient keys alike)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NotFound(missing) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = f"{stat.S_IMODE(st.st_mode):04o}"
        log.error("private key file %s is accessible by others (mode %s); run chmod 600 on it", path, mode)
        raise KeyStoreError(
            f"private key file {path.name} is accessible by others (mode {mode}); run chmod 600 on it "
            "(the server's log names the file)"
        )
    return path.read_bytes()


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    algorithm: Algorithm
    has_private: bool
    encrypted: bool
    trusted: bool
    default: bool


class TrustStore:
    """A directory of trusted public keys, one `<key_id>.pub.pem` each."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, key_id: str) -> Path:
        return self.path / f"{check_key_id(key_id)}.pub.pem"

    def get(self, key_id: str) -> PublicKey | None:
        try:
            data = self._file(key_id).read_bytes()
        except FileNotFoundError:
            return None
        except KeyStoreError:
            return None
        key = load_public_pem(data)
        if mldsa.key_id(key) != key_id:
            raise KeyStoreError(
                f"trust store entry {key_id} holds a different key; remove it and trust again"
            )
        return key

    def contains(self, key_id: str) -> bool:
        try:
            return self._file(key_id).is_file()
        except KeyStoreError:
            return False

    def ids(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name.removesuffix(".pub.pem") for p in self.path.glob("*.pub.pem"))

    def add(self, key: PublicKey) -> str:
        kid = mldsa.key_id(key)
        if not self.contains(kid):
            _write_new(self._file(kid), public_pem(key), 0o644)
        return kid

    def remove(self, key_id: str) -> None:
        try:
            self._file(key_id).unlink()
        except FileNotFoundError:
            raise NotFound(f"key {key_id} is not in the trust store") from None


class KeyStore:
    """Own signing key pairs, plus lookup of any known public key (own or trusted)."""

    def __init__(
        self,
        path: Path,
        trust: TrustStore,
        passphrase: bytes | None = None,
        default_key_id: str | None = None,
    ) -> None:
        self.path = path
        self.trust = trust
        self._passphrase = passphrase
        self._default_override = check_key_id(default_key_id) if default_key_id else None
        self._private_cache: dict[str, PrivateKey] = {}
        self._public_cache: dict[str, PublicKey] = {}

    # -- files -------------------------------------------------------------------------------
    def _private_file(self, key_id: str) -> Path:
        return self.path / f"{check_key_id(key_id)}.key.pem"

    def _public_file(self, key_id: str) -> Path:
        return self.path / f"{check_key_id(key_id)}.pub.pem"

    @property
    def _default_file(self) -> Path:
        return self.path / "default"

    # -- queries -----------------------------------------------------------------------------
    def ids(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name.removesuffix(".key.pem") for p in self.path.glob("*.key.pem"))

    def default_key_id(self) -> str | None:
        """The configured signing key (MACROSLOW_SIGNING_KEY_ID), else the one named in keys/default."""
        if self._default_override is not None:
            return self._default_override
        return self.stored_default()

    def stored_default(self) -> str | None:
        """The key id in keys/default, if any."""
        try:
            kid = self._default_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        return check_key_id(kid)

    def public_key(self, key_id: str) -> PublicKey | None:
        """The public key for `key_id` from this store or the trust store; None if unknown."""
        check_key_id(key_id)
        if key_id in self._public_cache:
            return self._public_cache[key_id]
        key = self.trust.get(key_id)
        if key is None:
            try:
                key = load_public_pem(self._public_file(key_id).read_bytes())
            except FileNotFoundError:
                return None
            if mldsa.key_id(key) != key_id:
                raise KeyStoreError(f"key file {key_id} holds a different key")
        self._public_cache[key_id] = key
        return key

    def private_key(self, key_id: str) -> PrivateKey:
        if key_id in self._private_cache:
            return self._private_cache[key_id]
        data = read_private_key_file(
            self._private_file(key_id), f"no private key {key_id} in this server's key store"
        )
        encrypted = b"ENCRYPTED PRIVATE KEY" in data
        if encrypted and self._passphrase is None:
            raise KeyStoreError(f"private key {key_id} is encrypted; set MACROSLOW_KEY_PASSPHRASE")
        try:
            key = serialization.load_pem_private_key(data, self._passphrase if encrypted else None)
        except (ValueError, TypeError) as exc:
            raise KeyStoreError(
                f"cannot load private key {key_id}: wrong passphrase or damaged file"
            ) from exc
        mldsa.algorithm_of(key)  # type: ignore[arg-type]
        if mldsa.key_id(key.public_key()) != key_id:  # type: ignore[arg-type]
            raise KeyStoreError(f"key file {key_id} holds a different key")
        self._private_cache[key_id] = key  # type: ignore[assignment]
        return key  # type: ignore[return-value]

    def info(self, key_id: str) -> KeyInfo:
        pub = self.public_key(key_id)
        if pub is None:
            raise NotFound(f"unknown key {key_id}")
        priv_file = self._private_file(key_id)
        has_private = priv_file.is_file()
        encrypted = has_private and b"ENCRYPTED" in priv_file.read_bytes()[:64]
        return KeyInfo(
            key_id=key_id,
            algorithm=mldsa.algorithm_of(pub),
            has_private=has_private,
            encrypted=encrypted,
            trusted=self.trust.contains(key_id),
            default=self.default_key_id() == key_id,
        )

    def list(self) -> list[KeyInfo]:
        return [self.info(kid) for kid in sorted(set(self.ids()) | set(self.trust.ids()))]

    # -- changes -----------------------------------------------------------------------------
    def generate(self, algorithm: Algorithm = mldsa.DEFAULT_ALGORITHM, *, trust: bool = True) -> KeyInfo:
        """Create a key pair; it becomes the default if there is none. Trusted unless told not to."""
        key = mldsa.generate(algorithm)
        pub = key.public_key()
        kid = mldsa.key_id(pub)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        _write_new(self._private_file(kid), pem, 0o600)
        _write_new(self._public_file(kid), public_pem(pub), 0o644)
        if self.stored_default() is None:
            _write_new(self._default_file, (kid + "\n").encode("ascii"), 0o644)
        if trust:
            self.trust.add(pub)
        return self.info(kid)

    @property
    def _log_file(self) -> Path:
        return self.path / "log"

    def log_key_id(self) -> str | None:
        """The key id in keys/log: the ML-DSA-44 key the receipts ledger signs checkpoints with."""
        try:
            kid = self._log_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        return check_key_id(kid)

    def make_log_key(self) -> str:
        """Create the ledger's ML-DSA-44 checkpoint key (trusted) and name it in keys/log; the one
        already named there if there is one (a home copied to another replica keeps it)."""
        existing = self.log_key_id()
        if existing is not None:
            return existing
        kid = self.generate(Algorithm.ML_DSA_44).key_id
        _write_new(self._log_file, (kid + "\n").encode("ascii"), 0o644)
        return kid

    def set_default(self, key_id: str) -> None:
        if not self._private_file(key_id).is_file():
            raise NotFound(f"no private key {key_id} in this server's key store")
        tmp = self._default_file.with_suffix(".tmp")
        tmp.write_text(key_id + "\n", encoding="ascii")
        os.replace(tmp, self._default_file)

    def export_public(self, key_id: str) -> bytes:
        pub = self.public_key(key_id)
        if pub is None:
            raise NotFound(f"unknown key {key_id}")
        return public_pem(pub)
