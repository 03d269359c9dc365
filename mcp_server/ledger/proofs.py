"""Offline receipt proofs in the C2SP tlog-proof format (https://c2sp.org/tlog-proof).

A proof is text, lines separated by U+000A (c2sp.org/tlog-proof, "Format"):

    c2sp.org/tlog-proof@v1          "The first line MUST be the string c2sp.org/tlog-proof@v1"
    extra <base64>                  optional: "base64-encoded opaque extra data"
    index <n>                       "ASCII decimal with no leading zeroes (unless the index is 0)"
    <base64 hash>                   zero or more: the RFC 6962 / 9162 inclusion proof, one SHA-256
    ...                             hash a line, "from the leaf's sibling hash up to the root's child"
                                    an empty line
    <checkpoint>                    "the checkpoint issued by the log ... verbatim": a signed note
                                    (`checkpoint`), whose own final newline ends the proof

Base64 is RFC 4648 section 4 (the spec's "Conventions"). Files SHOULD be named `*.tlog-proof`.

Our convention for `extra`. The spec leaves extra data to the application, naming as one use
"additional data necessary to reconstruct the record hash". A receipt's record hash is
`leaf_hash(leaf bytes)` (`receipts.Receipt.leaf_bytes`: canonical JSON of the receipt, UTF-8), so a
proof of ours carries exactly those leaf bytes in `extra`: the proof is then self-contained, and a
verifier needs nothing but the log's public key. The spec says extra data is not authenticated and
"Applications MUST NOT implicitly trust" it; `check_proof` trusts it only after hashing it and
verifying that hash, through the inclusion proof, up to the root of a checkpoint whose signature it
has checked. Only then is the JSON read, and its "seq" must equal the proof's index.

Reading is strict, since a proof comes from anywhere: the first line exactly, canonical base64 only
(the RFC 4648 alphabet with padding, re-encoding to the same text), canonical decimals below 2^64,
hashes of exactly 32 bytes and at most `MAX_HASHES` of them (a tree of 2^64 leaves needs 64), extra
data of at most `MAX_EXTRA_BYTES`, the whole proof at most `MAX_PROOF_BYTES`, and the checkpoint a
well-formed signed note (`checkpoint.note_key_ids`). Every failure of a proof is `SignatureInvalid`
with a message that quotes no more than a short prefix of the input. Bad arguments of our own (a
proof that can't be written) raise ValueError.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mcp_server import untrusted_json
from mcp_server.crypto import mldsa
from mcp_server.errors import InvalidDocument, RequestTooLarge, SignatureInvalid
from mcp_server.ledger import checkpoint
from mcp_server.ledger.checkpoint import Checkpoint
from mcp_server.ledger.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from mcp_server.ledger.receipts import Receipt, canonical_json

MAGIC = "c2sp.org/tlog-proof@v1"
EXTRA_PREFIX = "extra "
INDEX_PREFIX = "index "

MAX_HASHES = 64  # the longest RFC 9162 inclusion path, in a tree of 2^64 leaves
MAX_EXTRA_BYTES = checkpoint.MAX_NOTE_BYTES  # receipt leaf bytes: a few hundred bytes, more with payloads
_MAX_EXTRA_TEXT = 4 * -(-MAX_EXTRA_BYTES // 3)  # base64 of MAX_EXTRA_BYTES
_MAX_INDEX = (1 << 64) - 1
MAX_PROOF_BYTES = (
    len(MAGIC) + 1
    + len(EXTRA_PREFIX) + _MAX_EXTRA_TEXT + 1
    + len(INDEX_PREFIX) + len(str(_MAX_INDEX)) + 1
    + MAX_HASHES * (4 * -(-HASH_SIZE // 3) + 1)
    + 1
    + checkpoint.MAX_NOTE_BYTES
)  # fmt: skip

_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # ASCII digits only
# Receipt leaves are flat objects of strings, integers and nulls.
_LEAF_MAX_DEPTH = 4
_LEAF_MAX_NUMBER_CHARS = 32


@dataclass(frozen=True)
class TlogProof:
    """A parsed tlog-proof; nothing in it is verified (`check_proof` does that)."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint_note: str
    extra: bytes | None = None

    def claimed_origin(self) -> str:
        """The checkpoint's first line, the log's origin, as the proof claims it (unauthenticated
        until `check_proof`); SignatureInvalid if it could not be a signed-note key name (ours is the
        origin, docs/receipts.md)."""
        origin = self.checkpoint_note.partition("\n")[0]
        try:
            checkpoint.check_key_name(origin)
        except ValueError:
            raise SignatureInvalid(f"checkpoint origin {_shown(origin)} is not a valid key name") from None
        return origin


@dataclass(frozen=True)
class CheckedProof:
    """What a proof proved: the receipt (its leaf JSON), its index, and the signed checkpoint."""

    receipt: dict[str, Any]
    index: int
    checkpoint: Checkpoint


# -- writing ----------------------------------------------------------------------------------------


def format_proof(
    index: int, hashes: Sequence[bytes], checkpoint_note: str, extra: bytes | None = None
) -> str:
    """The tlog-proof text (c2sp.org/tlog-proof, "Format"); ValueError if it would not read back."""
    if type(index) is not int or not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"index {index!r} is not an integer in 0..2^64-1")
    if not all(isinstance(h, bytes) for h in hashes):
        raise ValueError("inclusion proof hashes must be bytes")
    if extra is not None and not isinstance(extra, bytes):
        raise ValueError("extra data must be bytes")
    lines = [MAGIC]
    if extra is not None:
        lines.append(EXTRA_PREFIX + base64.b64encode(extra).decode("ascii"))
    lines.append(f"{INDEX_PREFIX}{index}")
    lines.extend(base64.b64encode(h).decode("ascii") for h in hashes)
    text = "\n".join(lines) + "\n\n" + checkpoint_note
    try:
        parse_proof(text)
    except SignatureInvalid as exc:
        raise ValueError(f"cannot write this proof: {exc.message}") from None
    return text


def receipt_proof(receipt: Receipt, hashes: Sequence[bytes], checkpoint_note: str) -> str:
    """The proof of `receipt` by our convention: index = its seq, extra = its leaf bytes."""
    return format_proof(receipt.seq, hashes, checkpoint_note, extra=receipt.leaf_bytes())


# -- reading ----------------------------------------------------------------------------------------


def parse_proof(text: str | bytes) -> TlogProof:
    """Read a tlog-proof strictly (module docstring); SignatureInvalid if it is not one."""
    decoded = _decode_text(text)
    head, blank, note = decoded.partition("\n\n")
    if not blank:
        raise SignatureInvalid("proof has no empty line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != MAGIC:
        raise SignatureInvalid(f"proof does not start with the line {MAGIC!r}")
    at = 1
    extra = None
    if at < len(lines) and lines[at].startswith(EXTRA_PREFIX):
        extra = _parse_extra(lines[at][len(EXTRA_PREFIX) :])
        at += 1
    if at == len(lines) or not lines[at].startswith(INDEX_PREFIX):
        raise SignatureInvalid(f"proof line {at + 1} must be 'index <n>'")
    index = _parse_index(lines[at][len(INDEX_PREFIX) :])
    hashes = _parse_hashes(lines[at + 1 :], first_line=at + 2)
    _check_note(note)
    return TlogProof(index=index, hashes=hashes, checkpoint_note=note, extra=extra)


def _decode_text(text: str | bytes) -> str:
    if isinstance(text, str):
        if len(text) > MAX_PROOF_BYTES:  # at least that many bytes: don't encode a huge text to say so
            raise SignatureInvalid(f"proof is over {MAX_PROOF_BYTES} bytes")
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise SignatureInvalid("proof is not valid UTF-8") from None
    elif isinstance(text, bytes):
        raw = text
    else:
        raise SignatureInvalid(f"proof must be text or bytes, not {type(text).__name__}")
    if len(raw) > MAX_PROOF_BYTES:
        raise SignatureInvalid(f"proof is over {MAX_PROOF_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureInvalid(f"proof is not valid UTF-8 (byte {exc.start})") from None


def _check_note(note: str) -> None:
    """A signed note (c2sp.org/signed-note) whose text can be a checkpoint: tlog-checkpoint lines are
    never empty, so the note's one empty line is the one before its signatures."""
    if note.startswith("\n") or note.find("\n\n") != note.rfind("\n\n"):
        raise SignatureInvalid(
            "proof's checkpoint has an empty line in its text (checkpoint lines are never empty)"
        )
    try:
        checkpoint.note_key_ids(note)
    except SignatureInvalid as exc:
        raise SignatureInvalid(f"proof's checkpoint: {exc.message}") from None


def _parse_extra(encoded: str) -> bytes:
    if len(encoded) > _MAX_EXTRA_TEXT:
        raise SignatureInvalid(f"proof's extra data is over {MAX_EXTRA_BYTES} bytes")
    extra = checkpoint.strict_b64decode(encoded)
    if extra is None:
        raise SignatureInvalid(f"proof's extra data {_shown(encoded)} is not canonical standard base64")
    if len(extra) > MAX_EXTRA_BYTES:
        raise SignatureInvalid(f"proof's extra data is over {MAX_EXTRA_BYTES} bytes")
    return extra


def _parse_index(digits: str) -> int:
    if not _DECIMAL.fullmatch(digits):
        raise SignatureInvalid(f"proof index {_shown(digits)} is not a decimal without leading zeros")
    if len(digits) > len(str(_MAX_INDEX)) or int(digits) > _MAX_INDEX:
        raise SignatureInvalid(f"proof index {_shown(digits)} is beyond 2^64-1")
    return int(digits)


def _parse_hashes(lines: list[str], first_line: int) -> tuple[bytes, ...]:
    if len(lines) > MAX_HASHES:
        raise SignatureInvalid(f"proof has {len(lines)} hashes; an inclusion proof has at most {MAX_HASHES}")
    hashes = []
    for number, line in enumerate(lines, start=first_line):
        node = checkpoint.strict_b64decode(line)
        if node is None or len(node) != HASH_SIZE:
            raise SignatureInvalid(
                f"proof line {number} {_shown(line)} is not the standard base64 of a {HASH_SIZE}-byte hash"
            )
        hashes.append(node)
    return tuple(hashes)


# -- checking ---------------------------------------------------------------------------------------


def check_proof(proof: str | bytes | TlogProof, public_key: mldsa.PublicKey, key_name: str) -> CheckedProof:
    """What `proof` proves, if it holds for the log whose key is `key_name` / `public_key`.

    In order: the checkpoint note's signature (`checkpoint.open_checkpoint`) and its origin (our key
    name is the origin); then `extra`, which must be there (our convention, module docstring), is
    hashed as a leaf and that hash checked at `index` against the checkpoint's root (RFC 9162 section
    2.1.3.2); only then is it read as the receipt's canonical JSON, whose "seq" must be the index.
    SignatureInvalid (or its `merkle.ProofError`) for any failure; ValueError for a bad key name.
    """
    parsed = proof if isinstance(proof, TlogProof) else parse_proof(proof)
    opened = checkpoint.open_checkpoint(parsed.checkpoint_note, key_name, public_key)
    if opened.origin != key_name:
        raise SignatureInvalid(f"checkpoint is for the log {_shown(opened.origin)}, not {_shown(key_name)}")
    if parsed.extra is None:
        raise SignatureInvalid(
            "proof has no extra line; a receipt proof carries the receipt's leaf bytes there"
        )
    verify_inclusion(leaf_hash(parsed.extra), parsed.index, opened.size, parsed.hashes, opened.root)
    receipt = _receipt_json(parsed.extra)
    seq = receipt.get("seq")
    if type(seq) is not int or seq != parsed.index:
        raise SignatureInvalid(f"receipt says seq {_shown(seq)}, but the proof is for index {parsed.index}")
    return CheckedProof(receipt=receipt, index=parsed.index, checkpoint=opened)


def signing_key(proof: TlogProof, key_name: str, candidates: Iterable[mldsa.PublicKey]) -> mldsa.PublicKey:
    """The first of `candidates` (a trust store's keys, say) whose signed-note key ID appears on a
    signature line by `key_name` in the proof's checkpoint; SignatureInvalid if none does. Only
    chooses the key: `check_proof` still has to verify with it."""
    signers = {kid for name, kid in checkpoint.note_key_ids(proof.checkpoint_note) if name == key_name}
    for key in candidates:
        if signers.intersection(checkpoint.key_ids(key_name, key)):
            return key
    raise SignatureInvalid(f"the checkpoint has no signature by {_shown(key_name)} with a trusted key")


def _receipt_json(leaf: bytes) -> dict[str, Any]:
    """The receipt JSON in leaf bytes (already authenticated): a canonical JSON object."""
    try:
        receipt = untrusted_json.loads_object(
            leaf,
            max_bytes=MAX_EXTRA_BYTES,
            max_depth=_LEAF_MAX_DEPTH,
            max_number_digits=_LEAF_MAX_NUMBER_CHARS,
            what="receipt leaf",
            unique_keys=True,
        )
    except (InvalidDocument, RequestTooLarge) as exc:
        raise SignatureInvalid(f"proof's extra data is not a receipt: {exc.message}") from None
    if canonical_json(receipt) != leaf:
        raise SignatureInvalid("proof's extra data is not canonical receipt JSON")
    return receipt


# -- helpers ----------------------------------------------------------------------------------------


def _shown(value: object, limit: int = 40) -> str:
    """A value for a message: repr, cut to `limit` characters, so hostile input is never echoed whole."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
