"""Tool `encrypt_maml`: seal a MAML document for recipient keys (AES-256-GCM + ML-KEM-768/X25519)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from mcp_server import sealing
from mcp_server.adapters import ToolRegistry
from mcp_server.adapters.arguments import DOCUMENT
from mcp_server.calls import Call


class EncryptResult(BaseModel):
    sealed: str = Field(
        description="The sealed document (text, format maml-sealed/1): pass it to decrypt_maml."
    )
    document_id: str
    recipients: list[str] = Field(description="Key ids of the recipient (KEM) keys, in the header's order.")
    content_cipher: str = sealing.CONTENT_CIPHER
    key_wrap: str = sealing.KEY_WRAP


def register(tools: ToolRegistry) -> None:
    @tools.tool(title="Seal (encrypt) a MAML document", document="document")
    async def encrypt_maml(
        call: Call,
        document: DOCUMENT,
        recipients: Annotated[
            list[str],
            Field(
                min_length=1,
                max_length=sealing.MAX_RECIPIENTS,
                description="Recipient key ids (32 hex digits each): ML-KEM-768 + X25519 keys known to this "
                "server (made with `keys generate --kem` or imported with `keys import`).",
            ),
        ],
    ) -> EncryptResult:
        """Seal a MAML document so only the named recipient keys can open it.

        Needs the scope maml:encrypt, and the document's permissions.read must admit the caller.
        The document is validated first and sealed byte for byte, so a signature inside stays valid.
        Content: AES-256-GCM with a fresh random key and nonce; the key is wrapped for each recipient
        with ML-KEM-768 (FIPS 203) combined with X25519, so it stays safe if either one holds.
        """
        assert call.document is not None
        services = call.services
        document_id = call.document.id

        def seal() -> sealing.Sealed:
            publics = sealing.resolve_recipients(recipients, services.kem_keys, services.keys)
            return sealing.seal_bytes(document.encode("utf-8"), document_id, publics)

        sealed = await call.cpu(seal)
        return EncryptResult(
            sealed=sealing.render(sealed), document_id=sealed.document_id, recipients=sealed.recipient_ids
        )
