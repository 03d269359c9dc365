"""The rules of `query_openai`'s arguments (`mcp_server.llm.prompts.question`), without a server."""

from __future__ import annotations

import pytest

from mcp_server.errors import InvalidDocument
from mcp_server.llm import prompts
from mcp_server.maml import parser

DOC = """---
maml_version: "2.0"
id: urn:uuid:6f1c2b1e-8a8e-4c1e-9a55-1b2f3c4d5e6f
type: prompt
origin: agent://writer
requires:
  max_tokens: 300
permissions:
  execute: ["*"]
created_at: "2026-01-01T00:00:00Z"
---
## Intent
Say hello.

## Context
You are terse.
"""


def ask(**overrides: object) -> prompts.Question:
    arguments: dict[str, object] = {
        "prompt": None,
        "system": None,
        "document": None,
        "output_schema": None,
        "max_tokens": None,
        "server_max_tokens": 4096,
    }
    return prompts.question(**{**arguments, **overrides})  # type: ignore[arg-type]


def test_prompt_or_document_never_both_nor_neither() -> None:
    document = parser.parse(DOC)
    for arguments in ({}, {"prompt": "hi", "document": document}):
        with pytest.raises(InvalidDocument, match="either `prompt` or `document`"):
            ask(**arguments)


def test_a_prompt_with_its_defaults() -> None:
    asked = ask(prompt="hi", system="be brief")
    assert asked.messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})
    assert asked.max_tokens == prompts.DEFAULT_MAX_TOKENS and asked.output_schema is None
    assert ask(prompt="hi", server_max_tokens=100).max_tokens == 100  # the default within the limit
    assert ask(prompt="hi", max_tokens=7).max_tokens == 7


def test_a_document_brings_its_own_system_message_schema_and_limit() -> None:
    document = parser.parse(DOC)
    asked = ask(document=document)
    assert asked.messages[0] == {"role": "system", "content": "You are terse."}
    assert asked.messages[1]["content"].strip() == "Say hello."
    assert asked.max_tokens == 300  # requires.max_tokens
    for extra in ({"system": "x"}, {"output_schema": {"type": "object"}}):
        with pytest.raises(InvalidDocument, match="come from the document"):
            ask(document=document, **extra)
