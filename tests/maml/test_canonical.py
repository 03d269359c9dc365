"""canonical_bytes / canonical_text / replace_signature: exactly what a signature covers."""

from __future__ import annotations

import pytest

from mcp_server.crypto.keys import KeyStore
from mcp_server.maml import parser
from mcp_server.signing import sign_document

HEAD = '---\nmaml_version: "2.0"\nid: "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"\ntype: workflow\n'
BLOCK = 'signature:\n  algorithm: ML-DSA-65\n  key_id: 00112233445566778899aabbccddeeff\n  value: "AAAA"\n'


def test_unsigned_lf_document_is_its_own_canonical_form(example_text: str) -> None:
    assert "\r" not in example_text
    assert parser.canonical_bytes(example_text) == example_text.encode("utf-8")
    assert parser.canonical_bytes(example_text.encode("utf-8")) == example_text.encode("utf-8")


def test_signature_block_removed_wherever_it_is() -> None:
    before = HEAD + "title: t\n"
    after = "created_at: '2025'\n---\n# T\n"
    text = before + BLOCK + after
    assert parser.canonical_text(text) == before + after
    assert parser.canonical_bytes(text) == (before + after).encode()


def test_signature_block_with_tab_continuation_and_flow_value() -> None:
    text = HEAD + "signature: {algorithm: ML-DSA-65,\n\tkey_id: x, value: y}\ntitle: t\n---\n"
    assert parser.canonical_text(text) == HEAD + "title: t\n---\n"


def test_signature_lines_range() -> None:
    parts = parser.split(HEAD + BLOCK + "---\n")
    assert parser.signature_lines(parts) == range(4, 8)
    assert parser.signature_lines(parser.split(HEAD + "---\n")) == range(0)


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_line_endings_normalised(example_text: str, newline: str) -> None:
    converted = example_text.replace("\n", newline)
    assert parser.canonical_bytes(converted) == example_text.encode("utf-8")
    assert parser.canonical_bytes(converted.encode("utf-8")) == example_text.encode("utf-8")
    signed = HEAD + BLOCK + "---\n# T\n"
    assert parser.canonical_bytes(signed.replace("\n", newline)) == (HEAD + "---\n# T\n").encode()


def test_signed_document_has_the_canonical_bytes_of_the_original(
    example_text: str, keystore: KeyStore
) -> None:
    signed = sign_document(example_text, keystore).signed_document
    assert signed != example_text
    assert signed.count("\nsignature:\n") == 1
    assert parser.canonical_bytes(signed) == parser.canonical_bytes(example_text) == example_text.encode()
    crlf_signed = sign_document(example_text.replace("\n", "\r\n"), keystore).signed_document
    assert "\r" not in crlf_signed
    assert parser.canonical_bytes(crlf_signed) == example_text.encode()


def test_replace_signature_replaces_existing_block() -> None:
    text = HEAD + BLOCK + "title: t\n---\n# T\n"
    new = [
        "signature:",
        "  algorithm: ML-DSA-87",
        "  key_id: ffeeddccbbaa99887766554433221100",
        '  value: "BBBB"',
    ]
    replaced = parser.replace_signature(text, new)
    assert replaced == HEAD + "title: t\n" + "\n".join(new) + "\n---\n# T\n"
    assert replaced.count("signature:") == 1
    assert "ML-DSA-65" not in replaced
    # Replacing again is idempotent.
    assert parser.replace_signature(replaced, new) == replaced


def test_replace_signature_appends_when_unsigned() -> None:
    text = HEAD + "---\n# T\n"
    assert parser.replace_signature(text, ["signature: {}"]) == HEAD + "signature: {}\n---\n# T\n"


def test_signature_in_body_is_not_removed() -> None:
    body = "# T\nsignature:\n  algorithm: ML-DSA-65\n  value: x\n"
    text = HEAD + "---\n" + body
    assert parser.canonical_text(text) == text
    replaced = parser.replace_signature(text, ["signature: {}"])
    assert replaced == HEAD + "signature: {}\n---\n" + body


@pytest.mark.parametrize(
    "line",
    [
        "verification:\n  signature:\n    value: x\n",  # nested, not top level
        "signatures: [a]\n",  # a different key
        "signature_note: x\n",
        "'signature': x\n",  # quoted: not the textual rule
        "# signature: x\n",  # a comment
    ],
    ids=["nested", "plural", "prefix", "quoted", "comment"],
)
def test_only_a_top_level_signature_line_is_removed(line: str) -> None:
    text = HEAD + line + "---\n# T\n"
    assert parser.canonical_text(text) == text


def test_only_the_first_signature_entry_is_removed() -> None:
    text = HEAD + BLOCK + "title: t\n" + BLOCK + "---\n"
    assert parser.canonical_text(text) == HEAD + "title: t\n" + BLOCK + "---\n"
