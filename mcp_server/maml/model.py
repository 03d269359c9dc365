"""The MAML data model: front matter fields, permissions, signature block, sections, code blocks."""

from __future__ import annotations

import re
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

SECTION_NAMES = ("Intent", "Context", "Code_Blocks", "Input_Schema", "Output_Schema", "History")


class DocumentType(StrEnum):
    workflow = "workflow"
    quantum_workflow = "quantum_workflow"
    prompt = "prompt"
    dataset = "dataset"
    agent_blueprint = "agent_blueprint"
    api_request = "api_request"
    hybrid_workflow = "hybrid_workflow"


# One permission entry: agent://<sub>, scope:<scope>, role:<role>, gateway://<name>, or "*";
# a trailing "*" makes the entry a prefix wildcard (agent://*, scope:maml:*).
_ENTRY = re.compile(
    r"""^(?:
        \*
      | agent://(?:[A-Za-z0-9._~@:+\-/]+\*?|\*)
      | gateway://(?:[A-Za-z0-9._~\-]+\*?|\*)
      | scope:(?:[A-Za-z0-9._:\-/]+\*?|\*)
      | role:(?:[A-Za-z0-9._:\-/]+\*?|\*)
    )$""",
    re.VERBOSE,
)
_ORIGIN = re.compile(r"^agent://[A-Za-z0-9._~@:+\-/]+$")


def _entries(value: Any, field: str) -> list[str]:
    """Normalise the seeds' variants: a bare string is one entry, true is "*", false is nobody."""
    if value is None or value is False:
        return []
    if value is True:
        return ["*"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"permissions.{field} must be a list of entries, a string or a boolean")
    out: list[str] = []
    for entry in value:
        if not isinstance(entry, str) or not _ENTRY.fullmatch(entry):
            shown = repr(entry)
            shown = shown if len(shown) <= 80 else shown[:79] + "…"
            raise ValueError(
                f"permissions.{field}: {shown} is not an entry; use agent://<sub>, scope:<scope>, "
                "role:<role>, gateway://<name> or *, optionally ending in *"
            )
        out.append(entry)
    return out


class Permissions(BaseModel):
    """Who may read, write (sign) and execute a document. `write` implies `read`."""

    model_config = ConfigDict(extra="forbid")

    read: list[str] = Field(default_factory=list)
    write: list[str] = Field(default_factory=list)
    execute: list[str] = Field(default_factory=list)

    @field_validator("read", "write", "execute", mode="before")
    @classmethod
    def _normalise(cls, value: Any, info: Any) -> list[str]:
        return _entries(value, info.field_name)

    def effective(self, action: str) -> list[str]:
        if action == "read":
            return [*self.read, *(e for e in self.write if e not in self.read)]
        return list(getattr(self, action))


class Requires(BaseModel):
    model_config = ConfigDict(extra="allow")

    libs: list[str] = Field(default_factory=list)
    apis: list[str] = Field(default_factory=list)
    qubits: StrictInt | None = Field(default=None, ge=1)
    shots: StrictInt | None = Field(default=None, ge=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)


class SignatureBlock(BaseModel):
    """The `signature:` entry of the front matter; not itself covered by the signature."""

    model_config = ConfigDict(extra="forbid")

    algorithm: str
    key_id: str
    value: str = Field(description="Base64 of the ML-DSA signature over the canonical bytes.")
    digest: str | None = Field(default=None, description="sha256:<hex> of the canonical bytes, informative.")


class FrontMatter(BaseModel):
    model_config = ConfigDict(extra="allow")

    maml_version: str
    id: str
    type: DocumentType
    origin: str | None = None
    title: str | None = None
    requires: Requires = Field(default_factory=Requires)
    permissions: Permissions = Field(default_factory=Permissions)
    verification: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None
    signature: SignatureBlock | None = None

    @field_validator("maml_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError('maml_version must be a string such as "2.0" (quote it: 2.10 would read as 2.1)')
        return value

    @field_validator("id")
    @classmethod
    def _urn(cls, value: str) -> str:
        message = "id must be a UUID URN in canonical form, urn:uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
        rest = value.removeprefix("urn:uuid:")
        try:
            canonical = str(uuid.UUID(rest))
        except ValueError:
            raise ValueError(message) from None
        if not value.startswith("urn:uuid:") or rest.lower() != canonical:
            raise ValueError(message)
        return value

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is not None and not _ORIGIN.fullmatch(value):
            raise ValueError("origin must be agent://<name>")
        return value

    @field_validator("created_at", mode="before")
    @classmethod
    def _created(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("created_at must be a string (an ISO 8601 time)")
        return value


class CodeBlock(BaseModel):
    language: str = Field(description="The fence's info string, first word; empty when none.")
    code: str
    section: str | None
    line: int = Field(description="Line of the opening fence in the document (1-based).")


class Section(BaseModel):
    name: str
    line: int
    text: str


class MamlDocument(BaseModel):
    """A parsed, validated MAML document. `text` is the LF-normalised source."""

    front_matter: FrontMatter
    title: str | None
    sections: list[Section]
    code_blocks: list[CodeBlock]
    text: str
    canonical: bytes = Field(repr=False, description="The bytes a signature covers (docs/maml.md).")

    @property
    def id(self) -> str:
        return self.front_matter.id

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)
