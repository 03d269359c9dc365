"""The messages of a query: from a prompt (and system text), or from a MAML document.

`question(...)` holds the rules of `query_openai`'s arguments: either `prompt` (with an optional
`system`) or a `document`, never both or neither; with a document, the system message and output
schema come from the document; `max_tokens` defaults to the document's `requires.max_tokens`, else
`DEFAULT_MAX_TOKENS` (within the server's limit).

A document of type `prompt` or `workflow` is turned into messages as follows: its `## Context` section
(when present) becomes the system message and its `## Intent` section the user message. The JSON
Schema in its `## Output_Schema` section (a ```json block), if any, is the answer's output schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp_server.errors import InvalidDocument
from mcp_server.maml.model import DocumentType, MamlDocument

EXECUTABLE_TYPES = (DocumentType.prompt, DocumentType.workflow)
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class Question:
    messages: tuple[dict[str, str], ...]
    output_schema: dict[str, Any] | None
    max_tokens: int


def question(
    *,
    prompt: str | None,
    system: str | None,
    document: MamlDocument | None,
    output_schema: dict[str, Any] | None,
    max_tokens: int | None,
    server_max_tokens: int,
) -> Question:
    """What to ask, from `query_openai`'s arguments (`document` as the policy parsed it)."""
    if (prompt is None) == (document is None):
        raise InvalidDocument("give either `prompt` or `document`, not both or neither", field="prompt")
    limit = None
    if document is not None:
        if system is not None or output_schema is not None:
            raise InvalidDocument(
                "with `document`, the system message and output schema come from the document",
                field="system" if system is not None else "output_schema",
            )
        messages, output_schema = from_document(document)
        limit = document.front_matter.requires.max_tokens
    else:
        assert prompt is not None
        messages = from_prompt(prompt, system)
    tokens = max_tokens or limit or min(DEFAULT_MAX_TOKENS, server_max_tokens)
    return Question(messages, output_schema, tokens)


def from_prompt(prompt: str, system: str | None) -> tuple[dict[str, str], ...]:
    if not prompt.strip():
        raise InvalidDocument("the prompt is empty", field="prompt")
    messages = [{"role": "user", "content": prompt}]
    if system is not None and system.strip():
        messages.insert(0, {"role": "system", "content": system})
    return tuple(messages)


def from_document(document: MamlDocument) -> tuple[tuple[dict[str, str], ...], dict[str, Any] | None]:
    """The messages and the output schema (or None) of a prompt or workflow document."""
    kind = document.front_matter.type
    if kind not in EXECUTABLE_TYPES:
        raise InvalidDocument(
            f"query_openai executes documents of type prompt or workflow, not {kind.value}", field="type"
        )
    intent = document.section("Intent")
    if intent is None or not intent.text.strip():
        raise InvalidDocument("the document has no '## Intent' section to ask the model", field="Intent")
    messages = [{"role": "user", "content": intent.text}]
    context = document.section("Context")
    if context is not None and context.text.strip():
        messages.insert(0, {"role": "system", "content": context.text})
    return tuple(messages), output_schema(document)


def output_schema(document: MamlDocument) -> dict[str, Any] | None:
    for block in document.code_blocks:
        if block.section == "Output_Schema" and block.language.lower() in ("json", ""):
            schema = json.loads(block.code)  # the parser has checked it is a JSON object
            assert isinstance(schema, dict)
            return schema
    return None
