"""Tool `validate_maml`: schema and safety checks, no signature check."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mcp_server.adapters import ToolRegistry
from mcp_server.adapters.arguments import DOCUMENT
from mcp_server.calls import Call
from mcp_server.errors import InvalidDocument
from mcp_server.maml import parser


class Problem(BaseModel):
    code: str
    message: str
    field: str | None = None
    line: int | None = None


class CodeBlockInfo(BaseModel):
    language: str
    section: str | None
    line: int


class ValidationResult(BaseModel):
    valid: bool = Field(description="True when the document parses and every field is well formed.")
    document_id: str | None = None
    type: str | None = None
    title: str | None = None
    signed: bool = Field(default=False, description="Has a signature block; use verify_maml to check it.")
    sections: list[str] = Field(default_factory=list)
    code_blocks: list[CodeBlockInfo] = Field(default_factory=list)
    errors: list[Problem] = Field(default_factory=list)


def register(tools: ToolRegistry) -> None:
    @tools.tool(title="Validate a MAML document")
    async def validate_maml(call: Call, document: DOCUMENT) -> ValidationResult:
        """Check that a MAML document is well formed and safe to process, without checking its signature.

        Reports the document id, type, title, sections and code blocks, or the first problem found with
        the field and line it is on. Use this before sign_maml; use verify_maml to check a signature.
        """
        try:
            parsed = await call.cpu(parser.parse, document, call.services.limits)
        except InvalidDocument as exc:
            return ValidationResult(
                valid=False,
                errors=[Problem(code=exc.code, message=exc.message, field=exc.field, line=exc.line)],
            )
        front = parsed.front_matter
        return ValidationResult(
            valid=True,
            document_id=front.id,
            type=front.type.value,
            title=parsed.title,
            signed=front.signature is not None,
            sections=[s.name for s in parsed.sections],
            code_blocks=[
                CodeBlockInfo(language=b.language, section=b.section, line=b.line) for b in parsed.code_blocks
            ],
        )
