"""Tool `sign_maml`: embed an ML-DSA signature in a MAML document."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_server.adapters import tool_adapter
from mcp_server.signing import sign_document
from mcp_server.state import AppState
from tools.validate_maml import DOCUMENT


class SignResult(BaseModel):
    signed_document: str = Field(description="The document with its signature block in the front matter.")
    document_id: str
    key_id: str = Field(description="Fingerprint of the signing public key.")
    algorithm: str
    digest: str = Field(description="sha256 of the canonical bytes that were signed.")


def register(server: MCPServer[Any], state: AppState) -> None:
    @tool_adapter(state)
    async def sign_maml(
        document: DOCUMENT,
        key_id: Annotated[
            str | None,
            Field(description="Signing key id (32 hex digits); omit for the server's default key."),
        ] = None,
    ) -> SignResult:
        """Sign a MAML document with the server's post-quantum key (ML-DSA, FIPS 204).

        Needs the scope maml:sign, and the document's permissions.write must admit the caller.
        The document is validated first; an existing signature is replaced. Returns the signed document
        text to store or pass on; verify_maml checks it later. Any change to the signed text, even one
        byte, makes the signature invalid.
        """
        decision = await state.guard("sign_maml", document=document)
        assert decision.document is not None
        signed = sign_document(decision.document, state.keys, key_id=key_id, limits=state.limits)
        return SignResult(
            signed_document=signed.signed_document,
            document_id=signed.document_id,
            key_id=signed.key_id,
            algorithm=signed.algorithm,
            digest=signed.digest,
        )

    server.add_tool(
        sign_maml,
        title="Sign a MAML document",
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=False
        ),
    )
