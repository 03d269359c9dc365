"""Signing and verifying MAML documents, embedded (`signature:` in the front matter) or detached.

`verify_signature` returns nothing or raises `SignatureInvalid`; `inspect_signature` turns the same
checks into a report (valid, key id, trusted, reasons) for tools and the CLI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

from mcp_server import untrusted_json
from mcp_server.crypto import mldsa
from mcp_server.crypto.keys import KeyStore, check_key_id
from mcp_server.errors import InvalidDocument, KeyStoreError, NotFound, SignatureInvalid
from mcp_server.maml import parser
from mcp_server.maml.model import MamlDocument, SignatureBlock

DETACHED_FORMAT = "maml-detached-signature/1"
# Bounds on a detached signature's JSON (an ML-DSA-87 one is about 6.5 KB, flat): parse_detached.
DETACHED_MAX_BYTES = 64 * 1024
DETACHED_MAX_DEPTH = 16
DETACHED_MAX_NUMBER_CHARS = 40


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Signed:
    signed_document: str
    document_id: str
    key_id: str
    algorithm: str
    digest: str


@dataclass
class Report:
    """The outcome of checking a document's signature; `valid` means the bytes verify."""

    valid: bool = False
    trusted: bool = False
    signed: bool = False
    key_id: str | None = None
    algorithm: str | None = None
    digest: str | None = None
    document_id: str | None = None
    reasons: list[str] = field(default_factory=list)


def _signing_key(keys: KeyStore, key_id: str | None) -> tuple[str, mldsa.PrivateKey]:
    kid = key_id or keys.default_key_id()
    if kid is None:
        raise KeyStoreError("no signing key: run `macroslow-mcp init` or `macroslow-mcp keys generate`")
    return kid, keys.private_key(check_key_id(kid))


def sign_document(
    document: str | bytes | MamlDocument,
    keys: KeyStore,
    *,
    key_id: str | None = None,
    limits: parser.Limits | None = None,
) -> Signed:
    """Validate (unless given a parsed document), then sign the canonical bytes and embed the
    signature block (replacing any old one)."""
    limits = limits or parser.Limits()
    parsed = document if isinstance(document, MamlDocument) else parser.parse(document, limits)
    kid, private = _signing_key(keys, key_id)
    algorithm = mldsa.algorithm_of(private)
    value = base64.b64encode(mldsa.sign(private, parsed.canonical)).decode("ascii")
    block = [
        "signature:",
        f'  algorithm: "{algorithm.value}"',
        f'  key_id: "{kid}"',
        f'  digest: "{digest(parsed.canonical)}"',
        f'  value: "{value}"',
    ]
    signed = parser.replace_signature(parsed.text, block)
    # The signed text must read back as the same document: same canonical bytes, same fields.
    reread = parser.parse(
        signed,
        parser.Limits(max_bytes=max(limits.max_bytes, len(signed) * 4), max_depth=limits.max_depth),
        body=False,
    )
    if reread.canonical != parsed.canonical or reread.front_matter.model_dump(
        exclude={"signature"}
    ) != parsed.front_matter.model_dump(exclude={"signature"}):  # pragma: no cover - defensive
        raise InvalidDocument("the document cannot take a signature block without changing its meaning")
    return Signed(
        signed_document=signed,
        document_id=parsed.id,
        key_id=kid,
        algorithm=algorithm.value,
        digest=digest(parsed.canonical),
    )


def sign_detached(
    document: str | bytes, keys: KeyStore, *, key_id: str | None = None, limits: parser.Limits | None = None
) -> dict[str, Any]:
    """A detached signature (JSON object) over the same canonical bytes, for files that must not change."""
    limits = limits or parser.Limits()
    parsed = parser.parse(document, limits)
    kid, private = _signing_key(keys, key_id)
    return {
        "format": DETACHED_FORMAT,
        "document_id": parsed.id,
        "algorithm": mldsa.algorithm_of(private).value,
        "key_id": kid,
        "digest": digest(parsed.canonical),
        "value": base64.b64encode(mldsa.sign(private, parsed.canonical)).decode("ascii"),
    }


@dataclass(frozen=True)
class Detached:
    block: SignatureBlock
    document_id: str | None


def parse_detached(data: str | bytes) -> Detached:
    """Read a detached signature (docs/maml.md, section 8): `SignatureInvalid` if it is not one,
    `RequestTooLarge` over `DETACHED_MAX_BYTES`."""
    try:
        obj = untrusted_json.loads(
            data,
            max_bytes=DETACHED_MAX_BYTES,
            max_depth=DETACHED_MAX_DEPTH,
            max_number_digits=DETACHED_MAX_NUMBER_CHARS,
            what="detached signature",
        )
    except InvalidDocument as exc:
        raise SignatureInvalid(exc.message) from None
    if not isinstance(obj, dict) or obj.get("format") != DETACHED_FORMAT:
        raise SignatureInvalid(f"detached signature must be a JSON object with format {DETACHED_FORMAT!r}")
    try:
        block = SignatureBlock(
            algorithm=obj["algorithm"], key_id=obj["key_id"], value=obj["value"], digest=obj.get("digest")
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureInvalid(f"detached signature is missing or has a bad field: {exc}") from None
    document_id = obj.get("document_id")
    return Detached(block, document_id if isinstance(document_id, str) else None)


def verify_signature(
    parsed: MamlDocument, keys: KeyStore, *, block: SignatureBlock | None = None
) -> tuple[str, mldsa.Algorithm]:
    """Check the embedded (or given detached) signature; return (key id, algorithm) or raise.

    Says nothing about trust: callers decide whether the key id must be in the trust store.
    """
    block = block or parsed.front_matter.signature
    if block is None:
        raise SignatureInvalid("document is not signed")
    algorithm = mldsa.parse_algorithm(block.algorithm)
    try:
        kid = check_key_id(block.key_id)
    except KeyStoreError as exc:
        raise SignatureInvalid(exc.message) from None
    public = keys.public_key(kid)
    if public is None:
        raise SignatureInvalid(f"unknown key {kid}: add its public key with `macroslow-mcp keys trust`")
    key_algorithm = mldsa.algorithm_of(public)
    if key_algorithm != algorithm:
        raise SignatureInvalid(f"wrong algorithm: signature says {algorithm}, key {kid} is {key_algorithm}")
    try:
        raw = base64.b64decode(block.value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("signature value is not valid base64") from None
    if block.digest is not None and block.digest != digest(parsed.canonical):
        raise SignatureInvalid("document changed after signing (digest mismatch)")
    mldsa.verify(public, raw, parsed.canonical)
    return kid, algorithm


def inspect_signature(
    document: str | bytes,
    keys: KeyStore,
    *,
    detached: str | bytes | None = None,
    limits: parser.Limits | None = None,
) -> Report:
    """Verify and explain. Malformed or tampered input is a report with reasons, never an exception,
    except for oversized input (`RequestTooLarge`), which is refused before parsing."""
    limits = limits or parser.Limits()
    report = Report()
    try:
        prepared = parser.prepare(document, limits)
        report.digest = digest(prepared.canonical)
        parsed = parser.parse_prepared(prepared, limits, body=False)
    except InvalidDocument as exc:
        report.reasons.append(str(exc))
        return report
    report.document_id = parsed.id
    block = parsed.front_matter.signature
    try:
        if detached is not None:
            sig = parse_detached(detached)
            block = sig.block
            if sig.document_id is not None and sig.document_id != parsed.id:
                raise SignatureInvalid(
                    f"detached signature is for document {sig.document_id}, not {parsed.id}"
                )
    except SignatureInvalid as exc:
        report.reasons.append(str(exc))
        return report
    if block is not None:
        report.signed = True
        report.key_id, report.algorithm = block.key_id, block.algorithm
    try:
        kid, _ = verify_signature(parsed, keys, block=block)
    except (SignatureInvalid, NotFound, KeyStoreError) as exc:
        report.reasons.append(str(exc))
        return report
    report.valid = True
    report.trusted = keys.trust.contains(kid)
    if not report.trusted:
        report.reasons.append(f"signature_invalid: key {kid} is not in the trust store")
    return report
