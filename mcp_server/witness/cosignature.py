"""ML-DSA-44 checkpoint cosignatures (c2sp.org/tlog-cosignature) and their verifier keys.

A cosignature is a signed-note signature line (tlog-cosignature, "Format")

    — <cosigner name> base64(4-byte key ID || timestamped_signature)

where the key ID is (tlog-cosignature, "Format")

    SHA-256(<name> || "\\n" || 0x06 || 1312-byte ML-DSA-44 cosigner public key)[:4]

and `timestamped_signature` is a big-endian u64 `timestamp` (POSIX seconds, at most 2^63-1) followed
by the 2420-byte ML-DSA-44 signature (RFC 8446 section 3.3 serialisation). The signature is FIPS 204
pure ML-DSA-44 over the `cosigned_message` of tlog-cosignature, "ML-DSA-44 signed message":

    struct {
        uint8 label[12] = "subtree/v1\\n\\0";
        opaque cosigner_name<1..2^8-1>;      one length byte, then the name's UTF-8
        uint64 timestamp;
        opaque log_origin<1..2^8-1>;         the checkpoint's origin line without its newline
        uint64 start;                        0 for a checkpoint
        uint64 end;                          the tree size, for a checkpoint
        uint8 hash[32];                      the root hash
    } cosigned_message;

The specification names no FIPS 204 context string, so the context is the empty string (FIPS 204
section 5.2: ML-DSA.Sign with ctx of length 0). Extension lines of the checkpoint are not signed.

Verifier keys follow c2sp.org/signed-note, "Verifier keys":

    <key name>+hex(32-bit key ID)+base64(signature type || public key)

with signature type 0x06 and the raw 1312-byte public key (tlog-cosignature, "Format": "ML-DSA-44
public keys MAY be encoded as vkeys with signature type 0x06").

Verification follows signed-note, "Signatures": lines of other keys (another name, or the same name
with another key ID) are ignored; a line with the key's name and ID must verify (a failing one
rejects the note); at least one must. The note is split and checked for form by the ledger's
signed-note reader (`mcp_server.ledger.checkpoint`), which also bounds its size and its number of
signatures. Every failure on untrusted input is `SignatureInvalid`; bad arguments of our own are
ValueError.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from mcp_server.crypto import mldsa
from mcp_server.errors import KeyStoreError, SignatureInvalid
from mcp_server.ledger import checkpoint as notes
from mcp_server.ledger.merkle import HASH_SIZE

# tlog-cosignature, "ML-DSA-44 signed message".
LABEL = b"subtree/v1\n\x00"
# signed-note, "Signature types": "0x06 — Timestamped ML-DSA-44 (sub)tree cosignatures".
SIGNATURE_TYPE = b"\x06"
PUBLIC_KEY_SIZE = 1312  # FIPS 204 table 2, ML-DSA-44 pk
SIGNATURE_SIZE = 2420  # FIPS 204 table 2, ML-DSA-44 sig
KEY_ID_SIZE = 4
TIMESTAMP_SIZE = 8
# tlog-cosignature, "Format": the timestamp "MUST NOT exceed 2^63 - 1".
MAX_TIMESTAMP = (1 << 63) - 1
# FIPS 204 pure ML-DSA context string: tlog-cosignature names none, so it is empty.
CONTEXT = b""

_U64_MAX = (1 << 64) - 1
_BLOB_SIZE = KEY_ID_SIZE + TIMESTAMP_SIZE + SIGNATURE_SIZE
_SIGNATURE_PREFIX = "\u2014 "  # signed-note: em dash, space
_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")
_MAX_VKEY_CHARS = 4096  # a 0x06 vkey is about 1,760 characters with a 255-byte name


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature line: who signed, when, and the checkpoint its message commits to."""

    name: str
    timestamp: int
    origin: str
    size: int
    root: bytes


# -- the signed message and the key ID --------------------------------------------------------------


def cosigned_message(
    cosigner_name: str, timestamp: int, origin: str, start: int, end: int, root: bytes
) -> bytes:
    """The `cosigned_message` bytes of tlog-cosignature, "ML-DSA-44 signed message".

    ValueError for fields the structure cannot hold: an empty name or origin or one over 255 UTF-8
    bytes, a timestamp outside 0..2^63-1, start or end outside 0..2^64-1 or start > end, a root that
    is not 32 bytes, or a non-zero timestamp with a non-zero start ("If start is not zero, these
    values MUST be zero").
    """
    name_bytes = _opaque8("cosigner_name", cosigner_name)
    origin_bytes = _opaque8("log_origin", origin)
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp {timestamp!r} is not an integer in 0..2^63-1")
    for what, value in (("start", start), ("end", end)):
        if type(value) is not int or not 0 <= value <= _U64_MAX:
            raise ValueError(f"{what} {value!r} is not an integer in 0..2^64-1")
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    if start != 0 and timestamp != 0:
        raise ValueError("a subtree with a non-zero start must have a zero timestamp")
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise ValueError(f"hash must be {HASH_SIZE} bytes")
    return (
        LABEL
        + name_bytes
        + timestamp.to_bytes(8, "big")
        + origin_bytes
        + start.to_bytes(8, "big")
        + end.to_bytes(8, "big")
        + root
    )


def key_id(name: str, public_key: mldsa.PublicKey) -> bytes:
    """SHA-256(name || "\\n" || 0x06 || 1312-byte public key)[:4] (tlog-cosignature, "Format")."""
    _check_name(name)
    raw = _public_bytes(public_key)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + SIGNATURE_TYPE + raw).digest()[:KEY_ID_SIZE]


# -- signing and verifying --------------------------------------------------------------------------


def sign_line(checkpoint_text: str, name: str, private_key: mldsa.PrivateKey, timestamp: int) -> str:
    """The cosignature line "— <name> base64(key ID || timestamp || signature)\\n" for a checkpoint.

    `checkpoint_text` is the checkpoint's note text (tlog-checkpoint, "Note text"), or a whole signed
    note, whose text is taken (a checkpoint text has no blank line, so the two can't be confused).
    The message has start 0, end the tree size and hash the root (tlog-cosignature: "If signing a
    checkpoint, it MUST be zero"; "it is the size of the tree"). The caller vouches for the text:
    this signs what it is given. ValueError if it is not a checkpoint or a field can't be signed.
    """
    if not isinstance(private_key, MLDSA44PrivateKey):
        raise ValueError(f"cosignatures use ML-DSA-44 keys, not {type(private_key).__name__}")
    _check_name(name)
    text = checkpoint_text
    if "\n\n" in text:
        try:
            text, _ = notes._split_note(text)
        except SignatureInvalid as exc:
            raise ValueError(f"not a signed note: {exc.message}") from None
    try:
        cp = notes.parse_body(text)
    except SignatureInvalid as exc:
        raise ValueError(f"not a checkpoint: {exc.message}") from None
    message = cosigned_message(name, timestamp, cp.origin, 0, cp.size, cp.root)
    signature = private_key.sign(message, CONTEXT)
    blob = key_id(name, private_key.public_key()) + timestamp.to_bytes(TIMESTAMP_SIZE, "big") + signature
    return f"{_SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def verify_line(note: str, name: str, public_key: mldsa.PublicKey) -> int:
    """The timestamp of the cosignature by `name` / `public_key` on the checkpoint in `note`.

    Raises SignatureInvalid when the note is not a well-formed signed note whose text is a checkpoint,
    when it has no line with this name and key ID, or when such a line is malformed (not 4 + 8 + 2420
    bytes, a timestamp above 2^63-1) or does not verify. With several lines of this key, all must
    verify and the newest timestamp is returned.
    """
    return verify(note, name, public_key).timestamp


def verify(note: str | bytes, name: str, public_key: mldsa.PublicKey) -> Cosignature:
    """`verify_line`, returning the verified cosignature with the checkpoint it covers."""
    parsed = ParsedNote.parse(note)
    found = parsed.cosignature(name, public_key)
    if found is None:
        raise SignatureInvalid(f"note has no cosignature by {name} (key id {key_id(name, public_key).hex()})")
    return found


class ParsedNote:
    """A signed note checked for form once, to verify several keys' lines against it (a policy's
    witnesses, a witness's trusted log keys). Nothing in it is trusted until `cosignature` verifies."""

    __slots__ = ("_checkpoint", "_checkpoint_error", "signatures", "text")

    def __init__(self, text: str, signatures: list[tuple[str, bytes]]) -> None:
        self.text = text
        self.signatures = signatures
        self._checkpoint: notes.Checkpoint | None = None
        self._checkpoint_error: str | None = None
        try:
            self._checkpoint = notes.parse_body(text)
        except SignatureInvalid as exc:
            self._checkpoint_error = exc.message

    @classmethod
    def parse(cls, note: str | bytes) -> ParsedNote:
        """SignatureInvalid if `note` is not a signed note (signed-note, "Format")."""
        text, signatures = notes._split_note(note)
        return cls(text, signatures)

    @property
    def origin_line(self) -> str:
        """The first line of the (unverified) text: where a verifier looks up the keys to try."""
        return self.text.partition("\n")[0]

    def has_line(self, name: str, public_key: mldsa.PublicKey) -> bool:
        """Whether a signature line carries this key's name and key ID (nothing verified)."""
        want = key_id(name, public_key)
        return any(n == name and blob[:KEY_ID_SIZE] == want for n, blob in self.signatures)

    def cosignature(self, name: str, public_key: mldsa.PublicKey) -> Cosignature | None:
        """The verified cosignature by this key; None when no line has its name and key ID;
        SignatureInvalid when one does and is malformed or does not verify (signed-note: "If the key
        name and ID match a known key, verifiers MUST verify the signature")."""
        want = key_id(name, public_key)  # ValueError for a key that is not ML-DSA-44
        best: Cosignature | None = None
        for line_name, blob in self.signatures:
            if line_name != name or blob[:KEY_ID_SIZE] != want:
                continue  # signed-note: "Verifiers MUST ignore signatures from unknown keys"
            if len(blob) != _BLOB_SIZE:
                raise SignatureInvalid(
                    f"cosignature by {name} is {len(blob)} bytes; ML-DSA-44 cosignatures are {_BLOB_SIZE}"
                )
            timestamp = int.from_bytes(blob[KEY_ID_SIZE : KEY_ID_SIZE + TIMESTAMP_SIZE], "big")
            if timestamp > MAX_TIMESTAMP:
                raise SignatureInvalid(f"cosignature by {name} has a timestamp above 2^63-1")
            cp = self._checkpoint
            if cp is None:
                raise SignatureInvalid(f"signed note is not a checkpoint: {self._checkpoint_error}")
            try:
                message = cosigned_message(name, timestamp, cp.origin, 0, cp.size, cp.root)
            except ValueError as exc:  # an origin over 255 bytes can't have been cosigned
                raise SignatureInvalid(f"checkpoint can't carry an ML-DSA-44 cosignature: {exc}") from None
            try:
                public_key.verify(blob[KEY_ID_SIZE + TIMESTAMP_SIZE :], message, CONTEXT)
            except InvalidSignature:
                raise SignatureInvalid(
                    f"cosignature by {name} does not match the checkpoint (changed after signing, or "
                    "another key)"
                ) from None
            if best is None or timestamp > best.timestamp:
                best = Cosignature(name, timestamp, cp.origin, cp.size, cp.root)
        return best

    @property
    def checkpoint(self) -> notes.Checkpoint:
        """The checkpoint in the text: to be used only after a trusted line verified (signed-note:
        "The text MUST be ignored unless the note is signed by a trusted key")."""
        if self._checkpoint is None:
            raise SignatureInvalid(f"signed note is not a checkpoint: {self._checkpoint_error}")
        return self._checkpoint


# -- verifier keys ----------------------------------------------------------------------------------


def vkey(name: str, public_key: mldsa.PublicKey) -> str:
    """The verifier key "<name>+<8 hex digits of the key ID>+base64(0x06 || public key)"
    (signed-note, "Verifier keys")."""
    raw = _public_bytes(public_key)
    encoded = base64.b64encode(SIGNATURE_TYPE + raw).decode("ascii")
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def parse_vkey(text: str) -> tuple[str, MLDSA44PublicKey]:
    """The key name and ML-DSA-44 public key of a 0x06 verifier key (signed-note, "Verifier keys":
    "three parts separated by a plus"; the key name has no plus, so the first two split them).

    KeyStoreError when it is not one: a wrong shape, a key name signed-note does not allow, a key ID
    that is not 8 hex digits or does not match the name and key ("The key name and ID MUST match
    those used in the signatures"), base64 that is not canonical, another signature type, or a key
    that is not 1312 bytes.
    """
    if not isinstance(text, str) or len(text) > _MAX_VKEY_CHARS:
        raise KeyStoreError(f"verifier key is not a string of at most {_MAX_VKEY_CHARS} characters")
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise KeyStoreError("verifier key is not <name>+<key id>+<base64 key>")
    name, hex_id, encoded = parts
    try:
        notes.check_key_name(name)
    except ValueError:
        raise KeyStoreError(f"verifier key name {name[:64]!r} is not a valid note key name") from None
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise KeyStoreError(f"verifier key id {hex_id[:16]!r} is not 8 hexadecimal digits")
    material = notes.strict_b64decode(encoded)
    if material is None:
        raise KeyStoreError("verifier key material is not canonical standard base64")
    if material[:1] != SIGNATURE_TYPE:
        shown = material[:1].hex() or "none"
        raise KeyStoreError(f"verifier key has signature type 0x{shown}; ML-DSA-44 cosignatures are 0x06")
    raw = material[1:]
    if len(raw) != PUBLIC_KEY_SIZE:
        raise KeyStoreError(
            f"verifier key holds {len(raw)} bytes of key; ML-DSA-44 keys are {PUBLIC_KEY_SIZE}"
        )
    try:
        public_key = MLDSA44PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KeyStoreError("verifier key does not hold a valid ML-DSA-44 public key") from None
    if bytes.fromhex(hex_id) != key_id(name, public_key):
        raise KeyStoreError(f"verifier key id {hex_id} does not match its name and key")
    return name, public_key


# -- helpers ----------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    notes.check_key_name(name)  # ValueError: signed-note key name rules
    if len(name.encode("utf-8")) > 255:
        raise ValueError("cosigner name is over 255 bytes (cosigned_message: opaque<1..2^8-1>)")


def _opaque8(what: str, value: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode") from None
    if not 1 <= len(raw) <= 255:
        raise ValueError(f"{what} is {len(raw)} bytes; opaque<1..2^8-1> holds 1 to 255")
    return bytes([len(raw)]) + raw


def _public_bytes(public_key: mldsa.PublicKey) -> bytes:
    if not isinstance(public_key, MLDSA44PublicKey):
        raise ValueError(f"cosignatures use ML-DSA-44 keys, not {type(public_key).__name__}")
    return public_key.public_bytes_raw()
