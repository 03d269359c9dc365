"""A receipt: what one tool call did, in the form that is hashed into the log and shown to people.

The leaf of receipt `seq` in the Merkle log is `leaf_hash(leaf_bytes(receipt))`, where `leaf_bytes`
is the receipt's fields (every field but the leaf hash) as canonical JSON: UTF-8, keys sorted, no
insignificant white space, `"v": 1` added. The sequence number is inside the leaf, so moving a
receipt to another place in the log changes its leaf. docs/receipts.md writes this down exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from mcp_server.signing import digest

LEAF_VERSION = 1


def json_digest(value: Any) -> str:
    """The digest of a JSON value in canonical form (how arguments and results are recorded)."""
    return digest(canonical_json(value))


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_SECRET_WORDS = ("token", "secret", "password", "passphrase", "key", "authorization")
_KEEP_CHARS = 200


def redact(arguments: dict[str, Any]) -> str:
    """Arguments as JSON for a receipt's `payload`: secrets dropped, long text replaced by its digest."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: "[redacted]" if any(w in str(k).lower() for w in _SECRET_WORDS) else clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and len(value) > _KEEP_CHARS:
            data = value.encode("utf-8")
            return f"[{len(data)} bytes, {digest(data)}]"
        return value

    return canonical_json(clean(arguments)).decode("utf-8")


@dataclass(frozen=True)
class Receipt:
    seq: int
    id: str
    created_at: str  # UTC, ISO 8601 with microseconds and "Z"
    principal: str  # agent://<sub>
    issuer: str
    token_id: str | None
    scopes: str  # space-separated, sorted
    tool: str
    action: str | None  # the document permission used: read, write, execute
    decision: str  # allowed | denied
    reason: str | None  # for a denial or failure: "<code>: <message>"
    outcome: str  # ok, or the error code
    document_id: str | None
    document_digest: str | None
    arguments_digest: str | None
    result_digest: str | None
    backend_job_id: str | None
    duration_us: int
    payload: str | None  # only with MACROSLOW_RECEIPT_PAYLOADS=redacted
    # What a backend run attests (quantum jobs: circuit, backend, target, shots, seed, counts digest),
    # as canonical JSON. Left out of the leaf when null, so receipts without one hash as before.
    attestation: str | None = None

    def content(self) -> dict[str, Any]:
        # Every field is a scalar: a shallow copy (asdict would deep-copy, for nothing, slowly).
        content = {**self.__dict__, "v": LEAF_VERSION}
        if content["attestation"] is None:
            del content["attestation"]
        return content

    def leaf_bytes(self) -> bytes:
        return canonical_json(self.content())

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class Draft:
    """A receipt before it has a place in the log."""

    principal: str
    issuer: str
    token_id: str | None
    scopes: str
    tool: str
    action: str | None
    decision: str
    reason: str | None
    outcome: str
    document_id: str | None = None
    document_digest: str | None = None
    arguments_digest: str | None = None
    result_digest: str | None = None
    backend_job_id: str | None = None
    duration_us: int = 0
    payload: str | None = None
    attestation: str | None = None


def render_mu(receipt: Receipt, *, leaf_hash: bytes, checkpoint: dict[str, Any] | None) -> str:
    """The receipt as a `.mu` Markdown document (front matter + a readable History line).

    The "Mirror" section reverses the History line: a nod to the origin documents' `.mu` "reverse
    mirror". It is cosmetic: integrity comes from the leaf hash, the Merkle log and its signed
    checkpoints, never from the mirror.
    """

    def scalar(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    front = {
        "mu_version": "1.0",
        "id": f"urn:uuid:{receipt.id}",
        "type": "receipt",
        "seq": receipt.seq,
        "created_at": receipt.created_at,
        "source_maml": receipt.document_id,
        "principal": receipt.principal,
        "tool": receipt.tool,
        "action": receipt.action,
        "decision": receipt.decision,
        "outcome": receipt.outcome,
        "document_digest": receipt.document_digest,
        "arguments_digest": receipt.arguments_digest,
        "result_digest": receipt.result_digest,
        "backend_job_id": receipt.backend_job_id,
        "attestation": json.loads(receipt.attestation) if receipt.attestation else None,
        "leaf_hash": "sha256:" + leaf_hash.hex(),
    }
    lines = ["---", *(f"{k}: {scalar(v)}" for k, v in front.items())]
    if checkpoint is not None:
        lines.append("checkpoint:")
        lines.extend(f"  {k}: {scalar(v)}" for k, v in checkpoint.items())
    else:
        lines.append("checkpoint: null")
    history = (
        f"- {receipt.created_at}: {receipt.principal} called {receipt.tool}"
        f"{' on ' + receipt.document_id if receipt.document_id else ''}: {receipt.decision}, "
        f"{receipt.outcome}{' (' + receipt.reason + ')' if receipt.reason else ''}, "
        f"{receipt.duration_us / 1000:.1f} ms."
    )
    lines += [
        "---",
        f"# Receipt {receipt.seq}: {receipt.tool} by {receipt.principal}",
        "",
        "## History",
        history,
        "",
        "## Mirror",
        "Cosmetic only (integrity comes from the hashes and signatures):",
        "",
        "    " + history[::-1],
        "",
    ]
    return "\n".join(lines)
