"""How a call or a finished job becomes a receipt draft: the one place receipts are written from.

- `call_draft`: a tool call (allowed, denied or failed), from its `Call` record and its outcome;
- `job_draft`: a quantum job that ended after its caller stopped waiting (tool `quantum_job`), whose
  attestation binds the circuit, backend, shots and seed to the counts' digest.

Receipts hold digests, not content: the arguments as the caller sent them, and the result as the
caller received it (for an error, `{"error": {code, message, details}}`). Only with
`MACROSLOW_RECEIPT_PAYLOADS=redacted` are the arguments kept, redacted (`receipts.redact`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp_server.ledger.receipts import Draft, canonical_json, json_digest, redact

if TYPE_CHECKING:
    from mcp_server.calls import Call
    from mcp_server.errors import MacroslowError
    from mcp_server.quantum.jobs import Job


def call_draft(
    call: Call,
    *,
    result: dict[str, Any] | None,
    error: MacroslowError | None,
    payloads: bool = False,
) -> Draft:
    """`result` is the structured result the caller got; with an `error` (`InternalError` for a
    failure the server did not anticipate), the error the caller got."""
    principal = call.principal
    outcome, reason = (error.code, str(error)) if error is not None else ("ok", None)
    if error is not None:
        result = {"error": error.to_dict()}
    return Draft(
        principal=principal.uri if principal is not None else "unauthenticated",
        issuer=principal.issuer if principal is not None else "",
        token_id=principal.token_id if principal is not None else None,
        scopes=" ".join(sorted(principal.scopes)) if principal is not None else "",
        tool=call.name,
        action=call.action,
        decision="denied" if call.denial is not None else "allowed",
        reason=reason,
        outcome=outcome,
        document_id=call.document_id,
        document_digest=call.document_digest,
        arguments_digest=json_digest(call.arguments),
        result_digest=json_digest(result) if result is not None else None,
        backend_job_id=call.backend_job_id,
        duration_us=int(call.seconds * 1e6),
        payload=redact(call.arguments) if payloads else None,
        attestation=canonical_json(call.attestation).decode() if call.attestation else None,
    )


def job_draft(job: Job) -> Draft:
    from mcp_server.quantum.backends import JobStatus
    from mcp_server.quantum.jobs import attestation

    error = job.error or {}
    return Draft(
        principal=job.principal,
        issuer=job.issuer,
        token_id=None,
        scopes="",
        tool="quantum_job",
        action=None,
        decision="allowed",
        reason=f"{error.get('code')}: {error.get('message')}" if error else None,
        outcome="ok" if job.status is JobStatus.succeeded else str(error.get("code", job.status.value)),
        document_id=job.document_id,
        backend_job_id=job.id,
        result_digest=json_digest(job.result) if job.result is not None else None,
        duration_us=int(((job.finished_at or job.updated_at) - job.created_at) * 1e6),
        attestation=canonical_json(attestation(job)).decode(),
    )
