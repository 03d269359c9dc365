"""Tool `sign_maml`: embed an ML-DSA signature in a MAML document."""

from __future__ import annotations

import functools
from typing import Annotated

from pydantic import BaseModel, Field

from mcp_server.adapters import ToolRegistry
from mcp_server.adapters.arguments import DOCUMENT
from mcp_server.calls import Call
from mcp_server.signing import sign_document


class SignResult(BaseModel):
    signed_document: str = Field(description="The document with its signature block in the front matter.")
    document_id: str
    key_id: str = Field(description="Fingerprint of the signing public key.")
    algorithm: str
    digest: str = Field(description="sha256 of the canonical bytes that were signed.")


def register(tools: ToolRegistry) -> None:
    @tools.tool(title="Sign a MAML document", document="document")
    async def sign_maml(
        call: Call,
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
        assert call.document is not None
        services = call.services
        sign = functools.partial(
            sign_document, call.document, services.keys, key_id=key_id, limits=services.limits
        )
        signed = await call.cpu(sign)
        return SignResult(
            signed_document=signed.signed_document,
            document_id=signed.document_id,
            key_id=signed.key_id,
            algorithm=signed.algorithm,
            digest=signed.digest,
        )
