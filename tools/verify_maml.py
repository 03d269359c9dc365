"""Tool `verify_maml`: check a MAML document's signature and whether its key is trusted."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any

from pydantic import BaseModel, Field

from mcp_server.adapters import ToolRegistry
from mcp_server.adapters.arguments import DOCUMENT
from mcp_server.calls import Call
from mcp_server.signing import inspect_signature


class VerifyResult(BaseModel):
    valid: bool = Field(description="The signature verifies over the document's canonical bytes.")
    trusted: bool = Field(description="The signing key is in this server's trust store.")
    signed: bool = Field(description="The document carries a signature at all.")
    document_id: str | None = None
    key_id: str | None = None
    algorithm: str | None = None
    digest: str | None = Field(default=None, description="sha256 of the canonical bytes.")
    reasons: list[str] = Field(
        default_factory=list, description="Why not valid or not trusted; empty if both."
    )


def register(tools: ToolRegistry) -> None:
    @tools.tool(title="Verify a MAML signature")
    async def verify_maml(
        call: Call,
        document: DOCUMENT,
        detached_signature: Annotated[
            str | dict[str, Any] | None,
            Field(
                description="A detached signature: the JSON text of a .sig file (as `macroslow-mcp sign "
                "--detached` writes it), or that JSON object; omit to check the embedded one."
            ),
        ] = None,
    ) -> VerifyResult:
        """Verify a MAML document's ML-DSA signature and report whether the signing key is trusted.

        A document counts as authentic only when both `valid` and `trusted` are true. Tampered,
        unsigned or malformed documents are answered with valid=false and the reasons, not an error.
        """
        services = call.services
        if isinstance(detached_signature, dict):
            detached_signature = json.dumps(detached_signature)
        report = await call.cpu(
            functools.partial(
                inspect_signature,
                document,
                services.keys,
                detached=detached_signature,
                limits=services.limits,
            )
        )
        return VerifyResult(
            valid=report.valid,
            trusted=report.trusted,
            signed=report.signed,
            document_id=report.document_id,
            key_id=report.key_id,
            algorithm=report.algorithm,
            digest=report.digest,
            reasons=report.reasons,
        )
