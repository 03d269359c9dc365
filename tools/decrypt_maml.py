"""Tool `decrypt_maml`: open a sealed MAML document, if the caller may read what is inside."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_server import sealing
from mcp_server.adapters import tool_adapter
from mcp_server.calls import current_call
from mcp_server.errors import Forbidden, RequestTooLarge
from mcp_server.policy.guard import record_denial
from mcp_server.policy.operations import DocumentAction
from mcp_server.signing import digest, inspect_signature
from mcp_server.state import AppState


class DecryptResult(BaseModel):
    document: str = Field(description="The MAML document, exactly as it was sealed.")
    document_id: str
    recipient_key_id: str = Field(description="The recipient (KEM) key of this server that opened it.")
    signed: bool = Field(description="The document carries a signature.")
    signature_valid: bool = Field(description="Its signature verifies (as verify_maml would say).")
    signature_trusted: bool = Field(description="The signing key is in this server's trust store.")
    signer_key_id: str | None = None
    reasons: list[str] = Field(
        default_factory=list, description="Why the signature is not valid or not trusted, when signed."
    )


def register(server: MCPServer[Any], state: AppState) -> None:
    @tool_adapter(state)
    async def decrypt_maml(
        sealed: Annotated[
            str, Field(description="A sealed document (format maml-sealed/1) from encrypt_maml.")
        ],
    ) -> DecryptResult:
        """Open a sealed MAML document with this server's recipient key and return the document.

        Needs the scope maml:decrypt, and the opened document's permissions.read must admit the caller:
        that is checked before anything of the content is returned. Any change to the sealed text
        (header, nonce, wrapped keys, ciphertext) fails authentication. A signature inside is verified
        as verify_maml does; a document counts as authentic only when signature_valid and
        signature_trusted are both true.
        """
        decision = await state.guard("decrypt_maml")
        try:
            opened = sealing.open_sealed(sealed, state.kem_keys, limits=state.limits)
        except RequestTooLarge as exc:
            record_denial(decision.principal, "decrypt_maml", exc)
            raise state.deny(exc) from None
        record = current_call.get()
        if record is not None:
            record.document_id = opened.parsed.id
        if not state.policy.may(decision.principal, DocumentAction.read, opened.parsed):
            refused = Forbidden(
                f"the document's permissions.read do not admit {decision.principal.uri}",
                operation="decrypt_maml",
                document_id=opened.parsed.id,
                permission="read",
            )
            record_denial(decision.principal, "decrypt_maml", refused)
            raise state.deny(refused)
        if record is not None:  # the content's digest only for a caller who may read it
            record.document_digest = digest(opened.parsed.canonical)
        report = inspect_signature(opened.document, state.keys, limits=state.limits)
        return DecryptResult(
            document=opened.document,
            document_id=opened.parsed.id,
            recipient_key_id=opened.key_id,
            signed=report.signed,
            signature_valid=report.valid,
            signature_trusted=report.trusted,
            signer_key_id=report.key_id,
            reasons=report.reasons if report.signed else [],
        )

    server.add_tool(
        decrypt_maml,
        title="Open (decrypt) a sealed MAML document",
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
        ),
    )
