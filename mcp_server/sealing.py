"""Sealed MAML documents: AES-256-GCM content, the content key wrapped per recipient (hybrid KEM).

`seal` encrypts a (validated) MAML document for one or more recipient keys; `open_sealed` finds a
recipient slot this key store can open, authenticates and decrypts, and parses the document again.
`parse_sealed` reads the text format strictly. docs/sealing.md writes the format down; in short:

    ---
    format: "maml-sealed/1"
    document_id: "urn:uuid:..."
    content_cipher: "AES-256-GCM"
    key_wrap: "ML-KEM-768+X25519/HKDF-SHA256/AES-256-GCM"
    recipients:
      - key_id: "<32 hex>"
        mlkem_ciphertext: "<base64, 1088 bytes>"
        x25519_ephemeral: "<base64, 32 bytes>"
        wrapped_key: "<base64, 48 bytes: AES-256-GCM of the content key under the KEK, with tag>"
    nonce: "<base64, 12 bytes>"
    ---
    <base64 of AES-256-GCM(content key, nonce, document bytes, AAD) including its 16-byte tag>

AAD (the header binding) is `associated_data(document_id, recipient key ids)`: the format, the
algorithms, the document id and the recipients in order. Each wrapped key is sealed under its KEK
with the AAD plus its own key id, and a zero nonce (each KEK is used once: fresh encapsulation).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_server.crypto import kem
from mcp_server.crypto.keys import KeyStore, check_key_id
from mcp_server.errors import InvalidDocument, KeyStoreError, NotFound, RequestTooLarge
from mcp_server.maml import parser
from mcp_server.maml.model import MamlDocument

FORMAT = "maml-sealed/1"
CONTENT_CIPHER = "AES-256-GCM"
KEY_WRAP = f"{kem.ALGORITHM}/HKDF-SHA256/AES-256-GCM"
MAX_RECIPIENTS = 16
NONCE_BYTES = 12
KEY_BYTES = 32  # AES-256: keys are 128, 192 or 256 bits; there is no "2048-bit AES"
TAG_BYTES = 16
WRAPPED_KEY_BYTES = KEY_BYTES + TAG_BYTES
_WRAP_NONCE = bytes(NONCE_BYTES)
# Generous per-recipient and header allowances for the size cap checked before parsing.
_RECIPIENT_TEXT_BYTES = 2048
_HEADER_TEXT_BYTES = 1024

_FIELD = re.compile(r'^(?P<indent>(?:  - |    )?)(?P<name>[a-z_0-9]+): "(?P<value>[^"\\]*)"$')
_DOCUMENT_ID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Recipient:
    key_id: str
    mlkem_ciphertext: bytes
    x25519_ephemeral: bytes
    wrapped_key: bytes


@dataclass(frozen=True)
class Sealed:
    document_id: str
    recipients: tuple[Recipient, ...]
    nonce: bytes
    ciphertext: bytes  # AES-256-GCM output: encrypted document followed by the 16-byte tag

    @property
    def recipient_ids(self) -> list[str]:
        return [r.key_id for r in self.recipients]


@dataclass(frozen=True)
class Opened:
    document: str  # the document text exactly as sealed
    parsed: MamlDocument
    key_id: str  # the recipient key that opened it


def max_sealed_bytes(max_document_bytes: int) -> int:
    """The largest sealed text accepted for documents of at most `max_document_bytes`."""
    body = 4 * ((max_document_bytes + TAG_BYTES + 2) // 3) + 1
    return body + _HEADER_TEXT_BYTES + MAX_RECIPIENTS * _RECIPIENT_TEXT_BYTES


def associated_data(document_id: str, recipient_ids: Sequence[str]) -> bytes:
    """What the content AEAD binds: format, algorithms, document id and recipients (in order)."""
    return (
        f"format: {FORMAT}\ndocument_id: {document_id}\ncontent_cipher: {CONTENT_CIPHER}\n"
        f"key_wrap: {KEY_WRAP}\nrecipients: {' '.join(recipient_ids)}\n"
    ).encode("ascii")


def _wrap_aad(aad: bytes, key_id: str) -> bytes:
    return aad + f"recipient: {key_id}\n".encode("ascii")


def fresh_nonce() -> bytes:
    """A fresh 96-bit GCM nonce from the OS CSPRNG; each seal also has a fresh content key."""
    return os.urandom(NONCE_BYTES)


def fresh_content_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render(sealed: Sealed) -> str:
    lines = [
        "---",
        f'format: "{FORMAT}"',
        f'document_id: "{sealed.document_id}"',
        f'content_cipher: "{CONTENT_CIPHER}"',
        f'key_wrap: "{KEY_WRAP}"',
        "recipients:",
    ]
    for r in sealed.recipients:
        lines += [
            f'  - key_id: "{r.key_id}"',
            f'    mlkem_ciphertext: "{_b64(r.mlkem_ciphertext)}"',
            f'    x25519_ephemeral: "{_b64(r.x25519_ephemeral)}"',
            f'    wrapped_key: "{_b64(r.wrapped_key)}"',
        ]
    lines += [f'nonce: "{_b64(sealed.nonce)}"', "---", _b64(sealed.ciphertext), ""]
    return "\n".join(lines)


def seal_bytes(plaintext: bytes, document_id: str, recipients: Sequence[kem.PublicKey]) -> Sealed:
    """Encrypt `plaintext` for `recipients` (1 to MAX_RECIPIENTS distinct keys)."""
    if not recipients:
        raise InvalidDocument("sealing needs at least one recipient", field="recipients")
    if len(recipients) > MAX_RECIPIENTS:
        raise RequestTooLarge("too many recipients", requested=len(recipients), allowed=MAX_RECIPIENTS)
    ids = [r.key_id for r in recipients]
    if len(set(ids)) != len(ids):
        raise InvalidDocument("a recipient is named twice", field="recipients")
    if not _DOCUMENT_ID.fullmatch(document_id):
        raise InvalidDocument("document id must be a canonical UUID URN", field="id")
    aad = associated_data(document_id, ids)
    content_key, nonce = fresh_content_key(), fresh_nonce()
    slots = []
    for public in recipients:
        enc = kem.encapsulate(public)
        wrapped = AESGCM(enc.key).encrypt(_WRAP_NONCE, content_key, _wrap_aad(aad, public.key_id))
        slots.append(Recipient(public.key_id, enc.mlkem_ciphertext, enc.x25519_ephemeral, wrapped))
    ciphertext = AESGCM(content_key).encrypt(nonce, plaintext, aad)
    return Sealed(document_id, tuple(slots), nonce, ciphertext)


def seal(
    document: str | bytes | MamlDocument,
    recipients: Sequence[kem.PublicKey],
    *,
    limits: parser.Limits | None = None,
) -> str:
    """Validate the MAML document's front matter (its id, permissions and signature entry are what
    sealing and opening use), then seal its exact text (a signature inside stays valid)."""
    parsed = document if isinstance(document, MamlDocument) else parser.parse(document, limits, body=False)
    if isinstance(document, bytes):
        plaintext = document
    elif isinstance(document, str):
        plaintext = document.encode("utf-8")
    else:
        plaintext = parsed.text.encode("utf-8")
    return render(seal_bytes(plaintext, parsed.id, recipients))


# -- parsing --------------------------------------------------------------------------------------


def _bad(message: str) -> InvalidDocument:
    return InvalidDocument(f"sealed document: {message}")


def _decode(value: str, name: str, length: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{name} is not valid base64") from None
    if length is not None and len(raw) != length:
        raise _bad(f"{name} is {len(raw)} bytes, expected {length}")
    return raw


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self.lines, self.i = lines, 0

    def peek(self) -> str | None:
        return self.lines[self.i] if self.i < len(self.lines) else None

    def literal(self, expected: str) -> None:
        if self.peek() != expected:
            raise _bad(f"line {self.i + 1}: expected {expected!r}")
        self.i += 1

    def field(self, name: str, indent: str = "") -> str:
        line = self.peek()
        m = _FIELD.match(line) if line is not None else None
        if m is None or m["name"] != name or m["indent"] != indent:
            raise _bad(f'line {self.i + 1}: expected {indent.strip()}{name}: "..."')
        self.i += 1
        return m["value"]


def parse_sealed(text: str | bytes, *, max_bytes: int | None = None) -> Sealed:
    """Read the sealed text format strictly (exact fields, order and lengths), or raise.

    With `max_bytes`, larger input is `RequestTooLarge`, checked before anything is parsed."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if max_bytes is not None and size > max_bytes:
        raise RequestTooLarge(
            "sealed document is larger than the configured limit", requested=size, allowed=max_bytes
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise _bad("not ASCII text") from None
    if not text.isascii():
        raise _bad("not ASCII text")
    lines = _Lines(text.replace("\r\n", "\n").split("\n"))
    lines.literal("---")
    fmt = lines.field("format")
    if fmt != FORMAT:
        raise _bad(f"unsupported format {fmt!r}; this server reads {FORMAT!r}")
    document_id = lines.field("document_id")
    if not _DOCUMENT_ID.fullmatch(document_id):
        raise _bad("document_id must be a canonical UUID URN")
    for name, expected in (("content_cipher", CONTENT_CIPHER), ("key_wrap", KEY_WRAP)):
        value = lines.field(name)
        if value != expected:
            raise _bad(f"unsupported {name} {value!r}; expected {expected!r}")
    lines.literal("recipients:")
    recipients: list[Recipient] = []
    while (line := lines.peek()) is not None and line.startswith("  - "):
        if len(recipients) == MAX_RECIPIENTS:
            raise RequestTooLarge(
                "too many recipients", requested=len(recipients) + 1, allowed=MAX_RECIPIENTS
            )
        try:
            kid = check_key_id(lines.field("key_id", "  - "))
        except KeyStoreError as exc:
            raise _bad(exc.message) from None
        recipients.append(
            Recipient(
                kid,
                _decode(
                    lines.field("mlkem_ciphertext", "    "), "mlkem_ciphertext", kem.MLKEM_CIPHERTEXT_BYTES
                ),
                _decode(lines.field("x25519_ephemeral", "    "), "x25519_ephemeral", kem.X25519_BYTES),
                _decode(lines.field("wrapped_key", "    "), "wrapped_key", WRAPPED_KEY_BYTES),
            )
        )
    if not recipients:
        raise _bad("no recipients")
    if len({r.key_id for r in recipients}) != len(recipients):
        raise _bad("a recipient is named twice")
    nonce = _decode(lines.field("nonce"), "nonce", NONCE_BYTES)
    lines.literal("---")
    body = lines.peek()
    if body is None or not body:
        raise _bad("no ciphertext after the header (truncated?)")
    lines.i += 1
    if lines.lines[lines.i :] not in ([], [""]):
        raise _bad("unexpected text after the ciphertext line")
    ciphertext = _decode(body, "ciphertext")
    if len(ciphertext) < TAG_BYTES:
        raise _bad("ciphertext is shorter than its authentication tag (truncated?)")
    return Sealed(document_id, tuple(recipients), nonce, ciphertext)


# -- opening --------------------------------------------------------------------------------------


def open_bytes(sealed: Sealed, keys: kem.KemKeyStore) -> tuple[bytes, str]:
    """Authenticate and decrypt with the first recipient slot this store holds a private key for;
    returns (plaintext, recipient key id). Raises NotFound (no slot for us) or InvalidDocument."""
    mine = [r for r in sealed.recipients if keys.has_private(r.key_id)]
    if not mine:
        raise NotFound(
            "this document is not sealed for any recipient key held here "
            f"(recipients: {', '.join(sealed.recipient_ids)})"
        )
    aad = associated_data(sealed.document_id, sealed.recipient_ids)
    for slot in mine:
        kek = kem.decapsulate(keys.private_key(slot.key_id), slot.mlkem_ciphertext, slot.x25519_ephemeral)
        try:
            content_key = AESGCM(kek).decrypt(_WRAP_NONCE, slot.wrapped_key, _wrap_aad(aad, slot.key_id))
        except InvalidTag:
            continue
        try:
            return AESGCM(content_key).decrypt(sealed.nonce, sealed.ciphertext, aad), slot.key_id
        except InvalidTag:
            raise _bad(
                "failed authentication: the header, nonce or ciphertext was changed, or it was truncated"
            ) from None
    raise _bad("failed authentication of the wrapped key for " + ", ".join(r.key_id for r in mine))


def open_sealed(text: str | bytes, keys: kem.KemKeyStore, *, limits: parser.Limits | None = None) -> Opened:
    """Size cap, strict parse, authenticated decryption, then the MAML document parsed and its id
    checked against the header's."""
    limits = limits or parser.Limits()
    sealed = parse_sealed(text, max_bytes=max_sealed_bytes(limits.max_bytes))
    plaintext, key_id = open_bytes(sealed, keys)
    document = parser.parse(plaintext, limits, body=False)  # the front matter: id and permissions
    if document.id != sealed.document_id:  # authenticated, so only a sealer can have done this
        raise _bad(f"holds document {document.id}, but its header says {sealed.document_id}")
    try:
        text_out = plaintext.decode("utf-8")
    except UnicodeDecodeError:  # pragma: no cover - parser.parse already refused it
        raise _bad("document is not UTF-8") from None
    return Opened(text_out, document, key_id)


def resolve_recipients(
    key_ids: Sequence[str], keys: kem.KemKeyStore, signing: KeyStore | None = None
) -> list[kem.PublicKey]:
    """Recipient public keys by key id; a signing (ML-DSA) key id is refused as the wrong kind."""
    out = []
    for kid in key_ids:
        public = keys.public_key(check_key_id(kid))
        if public is None:
            if signing is not None and signing.public_key(kid) is not None:
                raise KeyStoreError(
                    f"key {kid} is an ML-DSA signing key, not a recipient (KEM) key; "
                    "make one with `macroslow-mcp keys generate --kem`"
                )
            raise NotFound(
                f"unknown recipient key {kid}: import its public key with `macroslow-mcp keys import`"
            )
        out.append(public)
    return out
