"""Tool `decrypt_maml`: open a sealed MAML document, if the caller may read what is inside."""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import BaseModel, Field

from mcp_server import sealing
from mcp_server.adapters import ToolRegistry
from mcp_server.calls import Call
from mcp_server.errors import RequestTooLarge
from mcp_server.policy.operations import DocumentAction
from mcp_server.signing import inspect_signature


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


def register(tools: ToolRegistry) -> None:
    @tools.tool(title="Open (decrypt) a sealed MAML document")
    async def decrypt_maml(
        call: Call,
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
        services = call.services
        try:
            opened = await call.cpu(
                functools.partial(sealing.open_sealed, sealed, services.kem_keys, limits=services.limits)
            )
        except RequestTooLarge as exc:
            raise call.refuse(exc) from None
        call.note_document(opened.parsed, content=False)  # its digest only for a caller who may read it
        call.check_permission(DocumentAction.read, opened.parsed)
        call.note_document(opened.parsed)
        report = await call.cpu(
            functools.partial(inspect_signature, opened.document, services.keys, limits=services.limits)
        )
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
