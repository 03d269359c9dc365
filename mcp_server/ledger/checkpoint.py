"""Checkpoints: the ledger's signed tree heads, as C2SP tlog-checkpoint bodies in C2SP signed notes.

A checkpoint commits to the Merkle tree (`merkle`) of the first `size` receipts. Its body is the
note text of c2sp.org/tlog-checkpoint:

    <origin>\\n                  non-empty, the log's identity (e.g. "example.com/macroslow")
    <size>\\n                    ASCII decimal, no leading zeros ("0" for the empty tree)
    <base64 root>\\n             standard base64 (RFC 4648 section 4) of the 32-byte RFC 9162 root
    [<extension line>\\n ...]    optional, non-empty, opaque

and the note (c2sp.org/signed-note) is that text, one blank line, then signature lines

    — <key name> <base64(4-byte key id || signature)>\\n          (U+2014 EM DASH, then a space)

Key ID and signature type. signed-note recommends

    key ID = SHA-256(key name || 0x0A || signature type || public key)[:4]

with an assigned signature type byte. signed-note (v1.0.0 text) assigns 0x01 (Ed25519), 0x02 (ECDSA), 0x04
(timestamped Ed25519 cosignatures), 0x05 (RFC 6962 tree head signatures); none is a plain ML-DSA
signature over the note text. (c2sp.org/tlog-cosignature assigns 0x06 to *ML-DSA-44 cosignatures*,
but those sign a binary `cosigned_message` with a timestamp and leave out the extension lines, and
exist only for ML-DSA-44; reusing 0x06 for a different message would make our signatures pass for
cosignatures they are not.) For that case signed-note says:

    "0xff — Reserved for signature types without an identifier byte assigned by this
    specification. It is RECOMMENDED that this byte be followed by a longer identifier that is
    unlikely to collide."

So the signature type here is `0xff || "macroslow-mcp/checkpoint/v1/" || <parameter set>`, e.g.
0xff followed by the ASCII bytes of "macroslow-mcp/checkpoint/v1/ML-DSA-65", and the public key is
the FIPS 204 raw encoding (1312, 1952 or 2592 bytes). The identifier names both the parameter set
and the FIPS 204 context string the signature uses (`CHECKPOINT_CONTEXT`), so a key ID pins the
whole scheme; the same ML-DSA key used for MAML documents (context `mldsa.MAML_CONTEXT`) can't have
a document signature replayed as a checkpoint signature or the other way round.

The signature is ML-DSA (pure, FIPS 204) over the whole note text, body and final newline included,
blank line and signature lines excluded, with context `CHECKPOINT_CONTEXT`.

Opening a note follows signed-note strictly: valid UTF-8, no control characters but newline (so CRLF
is refused), text separated from signatures at the last blank line, every signature line well formed.
Signature lines from other keys (another name, or the same name with another key ID) are ignored, as
the spec requires, so witnesses can add cosignatures; a line with our name and key ID must verify,
and at least one must. Only then is the text parsed as a checkpoint: the spec says the text MUST be
ignored until a trusted signature has verified. Every failure of a note is `SignatureInvalid`. Bad
arguments of our own (an invalid key name, a checkpoint that can't be written) raise ValueError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from mcp_server.crypto import mldsa
from mcp_server.errors import SignatureInvalid
from mcp_server.ledger.merkle import HASH_SIZE

# FIPS 204 context string of checkpoint signatures: domain separation from MAML document signatures.
CHECKPOINT_CONTEXT = b"macroslow-mcp/checkpoint/v1"
# signed-note: "0xff — Reserved for signature types without an identifier byte assigned by this
# specification"; the identifier after it is ours (see the module docstring).
UNASSIGNED_SIGNATURE_TYPE = b"\xff"
KEY_ID_SIZE = 4

# signed-note: verifiers "MUST accept at least up to 16 signatures"; post-quantum ones are ~3-6 kB.
MAX_SIGNATURES = 32
MAX_NOTE_BYTES = 256 * 1024

_MAX_TREE_SIZE = (1 << 64) - 1
_SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_CANONICAL_SIZE = re.compile(r"0|[1-9][0-9]*")  # ASCII digits only (\d would take any script's)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # signed-note: no controls but newline


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


# -- key ids ----------------------------------------------------------------------------------------


def signature_type(algorithm: mldsa.Algorithm) -> bytes:
    """The signature type bytes that go into the key ID: 0xff, then our identifier (module docs)."""
    return UNASSIGNED_SIGNATURE_TYPE + CHECKPOINT_CONTEXT + b"/" + algorithm.value.encode("ascii")


def key_id(key_name: str, public_key: mldsa.PublicKey) -> bytes:
    """SHA-256(key name || 0x0A || signature type || raw public key)[:4], as signed-note recommends."""
    check_key_name(key_name)
    material = (
        key_name.encode("utf-8")
        + b"\n"
        + signature_type(mldsa.algorithm_of(public_key))
        + public_key.public_bytes_raw()
    )
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


def key_ids(key_name: str, public_key: mldsa.PublicKey) -> tuple[bytes, ...]:
    """The key IDs a signature line by this key may carry: the C2SP ML-DSA-44 one (type 0x06) for an
    ML-DSA-44 key, and the older type's (`key_id`) for any key."""
    older = key_id(key_name, public_key)
    if mldsa.algorithm_of(public_key) is not mldsa.Algorithm.ML_DSA_44:
        return (older,)
    from mcp_server.witness import cosignature

    return (cosignature.key_id(key_name, public_key), older)


def check_key_name(key_name: str) -> None:
    """signed-note: "Key names MUST be non-empty and MUST NOT contain any Unicode spaces or plus"."""
    if not key_name:
        raise ValueError("note key name is empty")
    for ch in key_name:
        if ch == "+" or ch.isspace() or ord(ch) < 0x20:
            raise ValueError(f"note key name {key_name!r} contains {ch!r} (no spaces, '+' or controls)")
    if not _utf8_ok(key_name):
        raise ValueError(f"note key name {key_name!r} is not valid Unicode")


# -- the checkpoint body ----------------------------------------------------------------------------


def body(cp: Checkpoint) -> bytes:
    """The tlog-checkpoint note text of `cp`, as UTF-8; ValueError if `cp` can't be written as one."""
    _check_line("origin", cp.origin)
    if type(cp.size) is not int or not 0 <= cp.size <= _MAX_TREE_SIZE:
        raise ValueError(f"tree size {cp.size!r} is not an integer in 0..2^64-1")
    if not isinstance(cp.root, bytes) or len(cp.root) != HASH_SIZE:
        raise ValueError(f"root must be {HASH_SIZE} bytes")
    for extension in cp.extensions:
        _check_line("extension line", extension)
    lines = [cp.origin, str(cp.size), base64.b64encode(cp.root).decode("ascii"), *cp.extensions]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def parse_body(text: str) -> Checkpoint:
    """The checkpoint in a note text; SignatureInvalid if the text is not a tlog-checkpoint body."""
    if not text.endswith("\n"):
        raise SignatureInvalid("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise SignatureInvalid(f"checkpoint has {len(lines)} lines; origin, size and root are required")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise SignatureInvalid(f"checkpoint line {number} is empty")
        if _has_control(line):
            raise SignatureInvalid(f"checkpoint line {number} contains a control character")
    origin, size_text, root_text, *extensions = lines
    if not _CANONICAL_SIZE.fullmatch(size_text):
        raise SignatureInvalid(f"tree size {size_text[:32]!r} is not a decimal without leading zeros")
    if len(size_text) > len(str(_MAX_TREE_SIZE)) or int(size_text) > _MAX_TREE_SIZE:
        raise SignatureInvalid(f"tree size {size_text[:32]} is beyond 2^64-1")
    size = int(size_text)
    root = strict_b64decode(root_text)
    if root is None or len(root) != HASH_SIZE:
        raise SignatureInvalid(f"root {root_text[:64]!r} is not the base64 of a {HASH_SIZE}-byte hash")
    return Checkpoint(origin=origin, size=size, root=root, extensions=tuple(extensions))


# -- signed notes -----------------------------------------------------------------------------------


def sign_checkpoint(cp: Checkpoint, key_name: str, private_key: mldsa.PrivateKey) -> str:
    """The signed note: checkpoint body, blank line, one signature line by `key_name`."""
    check_key_name(key_name)
    text = body(cp)
    signature = mldsa.sign(private_key, text, CHECKPOINT_CONTEXT)
    blob = key_id(key_name, private_key.public_key()) + signature
    line = f"{_SIGNATURE_PREFIX}{key_name} {base64.b64encode(blob).decode('ascii')}\n"
    return text.decode("utf-8") + "\n" + line


def open_checkpoint(note: str | bytes, key_name: str, public_key: mldsa.PublicKey) -> Checkpoint:
    """The checkpoint in `note` if `key_name` / `public_key` signed it; SignatureInvalid otherwise.

    Two signature types are read: the C2SP post-quantum one (an ML-DSA-44 key whose tlog-cosignature
    key ID, type 0x06, is on a line: `mcp_server.witness.cosignature`), which the log signs with
    since schema 0005, and the older `0xff` type below, which checkpoints made before still carry.
    """
    if mldsa.algorithm_of(public_key) is mldsa.Algorithm.ML_DSA_44:
        from mcp_server.witness import cosignature

        if (key_name, cosignature.key_id(key_name, public_key)) in note_key_ids(note):
            cosignature.verify_line(
                note if isinstance(note, str) else note.decode("utf-8"), key_name, public_key
            )
            text, _ = _split_note(note)
            try:
                return parse_body(text)
            except SignatureInvalid as exc:
                raise SignatureInvalid(f"signed note is not a checkpoint: {exc.message}") from exc
    return _open_private_type(note, key_name, public_key)


def _open_private_type(note: str | bytes, key_name: str, public_key: mldsa.PublicKey) -> Checkpoint:
    """`open_checkpoint` for the older signature type (0xff + our identifier, module docstring).

    Other signature lines are ignored (signed-note: "Verifiers MUST ignore signatures from unknown
    keys"); every line with this key's name and key ID must verify, and there must be one.
    """
    check_key_name(key_name)
    text, signatures = _split_note(note)
    want_id = key_id(key_name, public_key)
    algorithm = mldsa.algorithm_of(public_key)
    message = text.encode("utf-8")
    verified = 0
    for name, blob in signatures:
        if name != key_name or blob[:KEY_ID_SIZE] != want_id:
            continue
        signature = blob[KEY_ID_SIZE:]
        expected = mldsa.SIGNATURE_BYTES[algorithm]
        if len(signature) != expected:
            raise SignatureInvalid(
                f"signature by {key_name} is {len(signature)} bytes; {algorithm} signatures are {expected}"
            )
        try:
            mldsa.verify(public_key, signature, message, CHECKPOINT_CONTEXT)
        except SignatureInvalid as exc:
            raise SignatureInvalid(
                f"signature by {key_name} does not match the note (changed after signing, or another key)"
            ) from exc
        verified += 1
    if not verified:
        raise SignatureInvalid(f"note has no signature by {key_name} (key id {want_id.hex()})")
    try:
        return parse_body(text)
    except SignatureInvalid as exc:
        raise SignatureInvalid(f"signed note is not a checkpoint: {exc.message}") from exc


def note_key_ids(note: str | bytes) -> list[tuple[str, bytes]]:
    """The (key name, key ID) of each signature line of `note`, in order, after the same form checks
    `open_checkpoint` makes; nothing is verified (signed-note: the text and the lines are untrusted
    until a signature by a known key verifies). SignatureInvalid if `note` is not a signed note."""
    _, signatures = _split_note(note)
    return [(name, blob[:KEY_ID_SIZE]) for name, blob in signatures]


def _split_note(note: str | bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """Text and (key name, key id || signature) pairs of a signed note, checked for form only."""
    if isinstance(note, str):
        try:
            raw = note.encode("utf-8")
        except UnicodeEncodeError:
            raise SignatureInvalid("note is not valid UTF-8") from None
    else:
        raw = note
    if len(raw) > MAX_NOTE_BYTES:
        raise SignatureInvalid(f"note is over {MAX_NOTE_BYTES} bytes")
    try:
        note = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureInvalid("note is not valid UTF-8") from None
    control = _CONTROL.search(note)
    if control:
        raise SignatureInvalid(f"note contains control character U+{ord(control.group()):04X}")
    if not note.endswith("\n"):
        raise SignatureInvalid("note does not end with a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise SignatureInvalid("note has no blank line between its text and its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise SignatureInvalid("note has no signature lines after its blank line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise SignatureInvalid(f"note has {len(lines)} signatures; at most {MAX_SIGNATURES} are read")
    return text, [_parse_signature_line(number, line) for number, line in enumerate(lines, start=1)]


def _parse_signature_line(number: int, line: str) -> tuple[str, bytes]:
    if not line.startswith(_SIGNATURE_PREFIX):
        raise SignatureInvalid(f"signature line {number} does not start with an em dash and a space")
    name, space, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    try:
        check_key_name(name)
    except ValueError:
        raise SignatureInvalid(f"signature line {number} has an invalid key name") from None
    blob = strict_b64decode(encoded) if space else None
    if blob is None or len(blob) <= KEY_ID_SIZE:
        raise SignatureInvalid(f"signature line {number} is not <key name> <base64(key id || signature)>")
    return name, blob


# -- helpers ----------------------------------------------------------------------------------------


def _check_line(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"checkpoint {what} must be a non-empty string")
    if "\n" in value or _has_control(value):
        raise ValueError(f"checkpoint {what} {value!r} contains a newline or control character")
    if not _utf8_ok(value):
        raise ValueError(f"checkpoint {what} {value!r} is not valid Unicode")


def _has_control(value: str) -> bool:
    return any(ord(ch) < 0x20 for ch in value)


def _utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def strict_b64decode(text: str) -> bytes | None:
    """Strict standard base64: RFC 4648 alphabet, padding, and canonical (re-encodes identically);
    None for anything else. The one decoder of base64 from notes, proofs, vkeys and witness requests."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None
