"""parser.parse: the example, every rejection (type, line, field), permissions and line endings."""

from __future__ import annotations

import pytest

from mcp_server.errors import InvalidDocument, RequestTooLarge
from mcp_server.maml import parser
from mcp_server.maml.model import Permissions

UUID = "6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
# Lines 1-4; extra front matter lines start at line 5.
HEAD = f'---\nmaml_version: "2.0"\nid: "urn:uuid:{UUID}"\ntype: workflow\n'


def doc(extra: str = "", body: str = "# T\n", head: str = HEAD) -> str:
    """A minimal document: HEAD, `extra` front matter lines (from line 5), closing ---, body."""
    return head + extra + "---\n" + body


def rejected(
    document: str | bytes,
    *,
    line: int | None,
    field: str | None = None,
    match: str | None = None,
    limits: parser.Limits | None = None,
) -> InvalidDocument:
    with pytest.raises(InvalidDocument, match=match) as info:
        parser.parse(document, limits)
    assert info.value.line == line, str(info.value)
    assert info.value.field == field, str(info.value)
    return info.value


# -- the example --------------------------------------------------------------------------------


def test_example_parses(example_text: str) -> None:
    parsed = parser.parse(example_text)
    front = parsed.front_matter
    assert parsed.id == f"urn:uuid:{UUID}"
    assert front.type == "quantum_workflow"
    assert front.maml_version == "2.0"
    assert front.origin == "agent://local"
    assert parsed.title == "GHZ state on three qubits"
    assert front.requires.libs == ["qiskit", "qiskit-aer"]
    assert (front.requires.qubits, front.requires.shots) == (3, 1024)
    assert front.created_at == "2025-10-18T10:00:00Z"
    assert front.verification == {"method": "ml-dsa-signature", "level": "strict"}
    assert front.signature is None
    assert parsed.text == example_text


def test_example_sections(example_text: str) -> None:
    parsed = parser.parse(example_text)
    assert [(s.name, s.line) for s in parsed.sections] == [
        ("Intent", 22),
        ("Context", 26),
        ("Code_Blocks", 30),
        ("Input_Schema", 42),
        ("Output_Schema", 47),
        ("History", 52),
    ]
    lines = example_text.splitlines()
    for section in parsed.sections:
        assert lines[section.line - 1] == f"## {section.name}"
    intent = parsed.section("Intent")
    assert intent is not None
    assert intent.text.startswith("Prepare a three-qubit Greenberger–Horne–Zeilinger state")
    assert parsed.section("Nope") is None


def test_example_code_blocks(example_text: str) -> None:
    parsed = parser.parse(example_text)
    assert [(b.language, b.line, b.section) for b in parsed.code_blocks] == [
        ("qasm", 31, "Code_Blocks"),
        ("json", 43, "Input_Schema"),
        ("json", 48, "Output_Schema"),
    ]
    lines = example_text.splitlines()
    for block in parsed.code_blocks:
        assert lines[block.line - 1] == f"```{block.language}"
    qasm = parsed.code_blocks[0].code
    assert qasm.startswith("OPENQASM 2.0;\n")
    assert qasm.endswith("measure q -> c;\n")
    assert qasm.count("\n") == 8
    assert parsed.code_blocks[1].code.startswith('{"type": "object"')


def test_example_permissions(example_text: str) -> None:
    perms = parser.parse(example_text).front_matter.permissions
    assert perms.read == ["agent://*", "scope:maml:read"]
    assert perms.write == ["agent://local"]
    assert perms.execute == ["agent://local", "scope:quantum:run"]
    assert perms.effective("read") == ["agent://*", "scope:maml:read", "agent://local"]
    assert perms.effective("execute") == ["agent://local", "scope:quantum:run"]


# -- size, encoding and framing -----------------------------------------------------------------


def test_size_cap_checked_before_parsing() -> None:
    limits = parser.Limits()
    garbage = b"\xff\x00" * (limits.max_bytes // 2) + b"\xff"  # max_bytes + 1, not UTF-8, has NUL
    assert len(garbage) == limits.max_bytes + 1
    with pytest.raises(RequestTooLarge) as info:
        parser.parse(garbage)
    assert info.value.details == {"requested": limits.max_bytes + 1, "allowed": limits.max_bytes}
    assert "line" not in info.value.details


def test_size_cap_boundary_and_str_counts_utf8_bytes() -> None:
    limits = parser.Limits(max_bytes=64)
    # Exactly at the limit: not too large, so the next check (UTF-8) reports instead.
    with pytest.raises(InvalidDocument, match="not UTF-8"):
        parser.parse(b"\xff" * 64, limits)
    with pytest.raises(RequestTooLarge) as info:
        parser.parse(b"\xff" * 65, limits)
    assert info.value.details == {"requested": 65, "allowed": 64}
    # 33 characters but 66 UTF-8 bytes.
    with pytest.raises(RequestTooLarge) as info:
        parser.parse("é" * 33, limits)
    assert info.value.details == {"requested": 66, "allowed": 64}


def test_not_utf8() -> None:
    data = doc('title: "caf\xe9"\n').encode("latin-1")
    offset = data.index(b"\xe9")
    err = rejected(data, line=None, match=f"not UTF-8 \\(byte {offset}\\)")
    assert err.details == {}


def test_unpaired_surrogate() -> None:
    rejected(doc('title: "\ud800"\n'), line=None, match="unpaired surrogates")


def test_nul_character() -> None:
    rejected(doc('title: "a"\n\x00\n'), line=6, match="NUL")


def test_nul_character_in_body_crlf() -> None:
    text = doc(body="# T\n\nbad \x00 here\n").replace("\n", "\r\n")
    rejected(text, line=8, match="NUL")


def test_nul_character_line_with_lone_cr() -> None:
    text = doc(body="# T\n\nbad \x00 here\n").replace("\n", "\r")
    rejected(text, line=8, match="NUL")


@pytest.mark.parametrize("prefix", ["\ufeff", b"\xef\xbb\xbf"], ids=["str", "bytes"])
def test_byte_order_mark(prefix: str | bytes) -> None:
    text = doc()
    document = prefix + text if isinstance(prefix, str) else prefix + text.encode()
    rejected(document, line=1, match="byte-order mark")


@pytest.mark.parametrize(
    "document",
    ["", "# Title\n", 'maml_version: "2.0"\n---\n', "--- \nid: x\n---\n", "\n---\n---\n"],
    ids=["empty", "markdown", "no-opening", "trailing-space", "blank-first-line"],
)
def test_missing_opening_delimiter(document: str) -> None:
    rejected(document, line=1, match="starts with a '---' line")


def test_unclosed_front_matter() -> None:
    rejected(HEAD, line=4, match="not closed")
    rejected(HEAD + "title: x\n\n# body\n", line=7, match="not closed")


# -- strict YAML --------------------------------------------------------------------------------


def test_yaml_alias() -> None:
    rejected(doc("a: *x\n"), line=5, field="a", match="aliases")


def test_yaml_alias_nested_in_sequence() -> None:
    rejected(doc("requires:\n  libs: [qiskit, *x]\n"), line=6, field="requires.libs[1]", match="aliases")


def test_yaml_anchor() -> None:
    rejected(doc("a: &x 1\nb: 2\n"), line=5, field="a", match="anchors")


def test_yaml_anchor_with_alias_billion_laughs() -> None:
    rejected(doc("a: &a [x, x]\nb: [*a, *a]\n"), line=5, field="a", match="anchors")


def test_yaml_anchor_on_whole_front_matter() -> None:
    rejected("---\n&top\nmaml_version: '2.0'\n---\n", line=2, match="anchors")


def test_yaml_explicit_tag() -> None:
    err = rejected(
        doc('a: !!python/object/apply:os.system ["echo pwned"]\n'), line=5, field="a", match="tags"
    )
    assert "python/object/apply:os.system" in err.message


@pytest.mark.parametrize("value", ["! foo", "! [1, 2]", "!!str 1", "!custom {b: 1}"])
def test_yaml_tags_of_any_kind(value: str) -> None:
    rejected(doc(f"a: {value}\n"), line=5, field="a", match="tags")


def test_yaml_merge_key() -> None:
    rejected(doc("<<: {title: x}\n"), line=5, field=None, match="merge keys")


def test_yaml_merge_key_nested() -> None:
    rejected(
        doc("verification:\n  method: x\n  <<: {level: y}\n"), line=7, field="verification", match="merge"
    )


def test_yaml_quoted_merge_key_is_a_plain_string() -> None:
    parsed = parser.parse(doc('"<<": x\n'))
    assert parsed.front_matter.model_extra == {"<<": "x"}


def test_duplicate_top_level_key() -> None:
    rejected(doc("type: prompt\n"), line=5, field="type", match="duplicate key")


def test_duplicate_key_quoted_spelling() -> None:
    rejected(doc('"type": prompt\n'), line=5, field="type", match="duplicate key")


def test_duplicate_nested_key() -> None:
    rejected(
        doc("requires:\n  qubits: 1\n  qubits: 2\n"), line=7, field="requires.qubits", match="duplicate key"
    )


@pytest.mark.parametrize("key", ["1", "on", "null", "~", "yes", "1.5", "false"])
def test_non_string_top_level_key(key: str) -> None:
    rejected(doc(f"{key}: x\n"), line=5, field=None, match="must be strings.*quote it")


def test_non_string_nested_key() -> None:
    rejected(
        doc("verification:\n  method: x\n  on: y\n"), line=7, field="verification", match="must be strings"
    )


def test_complex_key() -> None:
    rejected(doc("? [a, b]\n: x\n"), line=5, field=None, match="must be strings")


def test_quoted_keys_are_strings() -> None:
    parsed = parser.parse(doc('"1": x\n"on": y\n'))
    assert parsed.front_matter.model_extra == {"1": "x", "on": "y"}


def _nested(kind: str, levels: int) -> str:
    return ("{a: " * levels + "1" + "}" * levels) if kind == "map" else ("[" * levels + "1" + "]" * levels)


@pytest.mark.parametrize("kind", ["map", "seq"])
def test_nesting_depth_limit(kind: str) -> None:
    depth = parser.Limits().max_depth
    # The top-level mapping is level 0, so `nest` may hold depth - 1 nested collections.
    ok = parser.parse(doc(f"nest: {_nested(kind, depth - 1)}\n"))
    assert ok.front_matter.model_extra is not None
    assert str(ok.front_matter.model_extra["nest"]).count("1") == 1
    path = "nest" + (".a" if kind == "map" else "[0]") * (depth - 1)
    rejected(doc(f"nest: {_nested(kind, depth)}\n"), line=5, field=path, match=f"deeper than {depth}")


def test_nesting_depth_custom_limit_block_style() -> None:
    text = doc("requires:\n  libs:\n    - qiskit\n")
    rejected(text, line=7, field="requires.libs", match="deeper than 2", limits=parser.Limits(max_depth=2))
    assert parser.parse(text, parser.Limits(max_depth=3)).front_matter.requires.libs == ["qiskit"]


def test_more_than_one_yaml_document() -> None:
    rejected(doc("...\n--- \ntitle: second\n"), line=6, match="more than one YAML document")


def test_more_than_one_yaml_document_without_end_marker() -> None:
    rejected(doc("--- {title: second}\n"), line=5, match="more than one YAML document")


def test_bare_content_after_document_end() -> None:
    rejected(doc("...\ntitle: second\n"), line=6, match="not valid YAML")


def test_yaml_syntax_error_line() -> None:
    rejected(doc("title: x\nrequires: [a\n"), line=7, match="not valid YAML")


@pytest.mark.parametrize("front", ["- a\n- b\n", "hello\n", "'a string'\n", "null\n"])
def test_front_matter_not_a_mapping(front: str) -> None:
    rejected(f"---\n{front}---\n# T\n", line=2, match="must be a YAML mapping")


@pytest.mark.parametrize("front", ["", "\n\n", "# only a comment\n"], ids=["nothing", "blank", "comment"])
def test_empty_front_matter(front: str) -> None:
    rejected(f"---\n{front}---\n# T\n", line=2, match="front matter is empty")


# -- schema -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    [f"uuid:{UUID}", UUID, f"urn:uuid:{UUID[:-1]}x", "urn:uuid:", f"urn:isbn:{UUID}", "urn:uuid:../../etc"],
)
def test_bad_id(bad_id: str) -> None:
    rejected(doc(head=HEAD.replace(f"urn:uuid:{UUID}", bad_id)), line=3, field="id", match="UUID URN")


@pytest.mark.parametrize(
    "bad_id", [f"urn:uuid:urn:uuid:{UUID}", f"urn:uuid:{{{UUID}}}"], ids=["double", "braces"]
)
def test_non_canonical_uuid_urn_rejected(bad_id: str) -> None:
    rejected(doc(head=HEAD.replace(f"urn:uuid:{UUID}", bad_id)), line=3, field="id", match="UUID URN")


def test_missing_required_field_points_at_front_matter_start() -> None:
    rejected(doc(head=HEAD.replace("type: workflow\n", "")), line=2, field="type", match="required")


def test_field_error_line_for_quoted_key() -> None:
    rejected(doc(head=HEAD.replace('id: "urn', '"id": "urn').replace("-4e7a-", "-zzzz-")), line=3, field="id")


def test_unknown_type() -> None:
    rejected(doc(head=HEAD.replace("type: workflow", "type: bogus")), line=4, field="type", match="workflow")


@pytest.mark.parametrize("origin", ["http://x", "agent://", "agent://a b", "local"])
def test_bad_origin(origin: str) -> None:
    rejected(doc(f'origin: "{origin}"\n'), line=5, field="origin", match="agent://<name>")


def test_good_origin() -> None:
    assert parser.parse(doc("origin: agent://alice@example\n")).front_matter.origin == "agent://alice@example"


@pytest.mark.parametrize(
    ("entry", "field"),
    [("[agent://a, 'http://x']", "read"), ("http://x", "read"), ("[1]", "read"), ("[agent://a b]", "read")],
)
def test_bad_permission_entry(entry: str, field: str) -> None:
    err = rejected(
        doc(f"permissions:\n  {field}: {entry}\n"),
        line=5,
        field=f"permissions.{field}",
        match="is not an entry",
    )
    assert f"permissions.{field}" in err.message


def test_bad_permission_entry_in_write() -> None:
    rejected(
        doc("title: t\npermissions:\n  read: '*'\n  write: [http://x]\n"),
        line=6,
        field="permissions.write",
        match="'http://x' is not an entry",
    )


def test_unknown_permission_action() -> None:
    rejected(doc("permissions:\n  admin: true\n"), line=5, field="permissions.admin", match="Extra inputs")


def test_created_at_number_rejected() -> None:
    rejected(doc("created_at: 12345\n"), line=5, field="created_at", match="must be a string")


@pytest.mark.parametrize("stamp", ["2025-10-18T10:00:00Z", "2025-10-18", "2025-10-18 10:00:00.5 +02:00"])
def test_created_at_timestamp_stays_text(stamp: str) -> None:
    created = parser.parse(doc(f"created_at: {stamp}\n")).front_matter.created_at
    assert type(created) is str
    assert created == stamp


@pytest.mark.parametrize(("written", "version"), [("'2.0'", "2.0"), ('"2.10"', "2.10"), ("v2", "v2")])
def test_maml_version_is_a_string(written: str, version: str) -> None:
    parsed = parser.parse(doc(head=HEAD.replace('"2.0"', written)))
    assert parsed.front_matter.maml_version == version


@pytest.mark.parametrize("written", ["true", "null", "[2]", "2.0", "2", "2.10"])
def test_maml_version_other_types_rejected(written: str) -> None:
    rejected(doc(head=HEAD.replace('"2.0"', written)), line=2, field="maml_version")


# -- body ---------------------------------------------------------------------------------------


def test_unclosed_code_fence() -> None:
    # lines: 5 ---, 6 # T, 7 blank, 8 ## Code_Blocks, 9 fence
    rejected(
        doc(body="# T\n\n## Code_Blocks\n```python\nprint(1)\n"), line=9, match="code block is not closed"
    )


def test_shorter_fence_does_not_close_longer_one() -> None:
    rejected(doc(body="# T\n````md\n```\ninner\n```\n"), line=7, match="not closed")
    parsed = parser.parse(doc(body="# T\n````md\n```\ninner\n```\n````\n"))
    assert [(b.language, b.code, b.line) for b in parsed.code_blocks] == [("md", "```\ninner\n```\n", 7)]


def test_duplicate_intent_section() -> None:
    rejected(doc(body="# T\n## Intent\nx\n## Intent\ny\n"), line=9, match="'## Intent' appears twice")


def test_other_duplicate_headings_allowed() -> None:
    parsed = parser.parse(doc(body="## Notes\na\n## Notes\nb\n"))
    assert [s.name for s in parsed.sections] == ["Notes", "Notes"]


def test_heading_inside_code_block_is_not_a_section() -> None:
    parsed = parser.parse(doc(body="## Intent\n```md\n## Intent\n```\n"))
    assert [s.name for s in parsed.sections] == ["Intent"]


def test_input_schema_not_json() -> None:
    # lines: 5 ---, 6 ## Input_Schema, 7 fence, 8 {"a": 1,, 9 "b": }
    body = '## Input_Schema\n```json\n{"a": 1,\n "b": }\n```\n'
    rejected(doc(body=body), line=9, match="'## Input_Schema' code block is not JSON")


def test_output_schema_not_an_object() -> None:
    rejected(doc(body="## Output_Schema\n```\n[1, 2]\n```\n"), line=7, match="must hold a JSON object")


def test_schema_section_other_language_not_checked() -> None:
    parsed = parser.parse(doc(body="## Input_Schema\n```yaml\ntype: object\n```\n"))
    assert parsed.code_blocks[0].language == "yaml"


# -- permissions normalisation ------------------------------------------------------------------


def test_permissions_normalised_from_yaml() -> None:
    parsed = parser.parse(doc("permissions:\n  read: agent://a\n  write: true\n  execute: false\n"))
    perms = parsed.front_matter.permissions
    assert perms.read == ["agent://a"]
    assert perms.write == ["*"]
    assert perms.execute == []


@pytest.mark.parametrize(
    ("value", "entries"),
    [
        ("agent://a", ["agent://a"]),
        (True, ["*"]),
        (False, []),
        (None, []),
        (["scope:x:*", "*"], ["scope:x:*", "*"]),
    ],
)
def test_permissions_normalisation(value: object, entries: list[str]) -> None:
    assert Permissions.model_validate({"execute": value}).execute == entries


def test_write_implies_read() -> None:
    perms = Permissions.model_validate({"read": ["agent://a", "role:r"], "write": ["role:r", "agent://w"]})
    assert perms.effective("read") == ["agent://a", "role:r", "agent://w"]
    assert perms.effective("write") == ["role:r", "agent://w"]
    assert perms.effective("execute") == []
    only_write = Permissions.model_validate({"write": "agent://w"})
    assert only_write.read == []
    assert only_write.effective("read") == ["agent://w"]


# -- line endings -------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_line_endings_parse_like_lf(example_text: str, newline: str) -> None:
    expected = parser.parse(example_text).model_dump()
    converted = example_text.replace("\n", newline)
    assert parser.parse(converted).model_dump() == expected
    assert parser.parse(converted.encode("utf-8")).model_dump() == expected


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_line_endings_error_lines_like_lf(newline: str) -> None:
    text = doc("requires:\n  qubits: 1\n  qubits: 2\n").replace("\n", newline)
    rejected(text, line=7, field="requires.qubits", match="duplicate key")


@pytest.mark.parametrize("entry", ["agent://", "scope:", "role:", "gateway://"])
def test_empty_permission_entries_rejected(entry: str) -> None:
    rejected(doc(f"permissions:\n  read: ['{entry}']\n"), line=5, field="permissions.read")


@pytest.mark.parametrize("value", ["true", "'3'", "3.0"])
def test_requires_counts_are_integers(value: str) -> None:
    rejected(doc(f"requires:\n  qubits: {value}\n"), line=5, field="requires.qubits")


def test_closing_fence_indented_four_spaces_does_not_close() -> None:
    rejected(doc(body="# T\n## Code_Blocks\n```qasm\nx\n    ```\n"), line=8, match="not closed")
    parsed = parser.parse(doc(body="# T\n## Code_Blocks\n```qasm\nx\n   ```\n"))
    assert parsed.code_blocks[0].code == "x\n"


def test_schema_block_language_is_case_insensitive() -> None:
    rejected(doc(body="# T\n## Input_Schema\n```JSON\n{nope\n```\n"), line=9, match="not JSON")


# -- plain scalars and number bombs (docs/maml.md, section 2) ------------------------------------


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("3", 3),
        ("-12", -12),
        ("999999999999999999", 999_999_999_999_999_999),
        ("2.5", 2.5),
        ("1.5e+3", 1500.0),
        ("017", "017"),
        ("0x1A", "0x1A"),
        ("1_000", "1_000"),
        ("1:30", "1:30"),
        (".inf", ".inf"),
        (".nan", ".nan"),
        ("1e3", "1e3"),
        ("2025-10-18", "2025-10-18"),
    ],
)
def test_plain_scalars_resolve_without_yaml_1_1(written: str, value: object) -> None:
    extra = parser.parse(doc(f"x: {written}\nnested: {{k: [{written}]}}\n")).front_matter.model_extra
    assert extra == {"x": value, "nested": {"k": [value]}}
    assert type(extra["x"]) is type(value)


@pytest.mark.parametrize(
    ("written", "match"),
    [
        ("9" * 19, "at most 18 digits"),
        ("-" + "9" * 5000, "at most 18 digits"),
        ("1." + "0" * 18, "at most 18 digits"),
        ("1.5e+1000", "3 in its exponent"),
        ("1.0e+999", "too large"),
    ],
)
def test_numbers_with_too_many_digits_are_refused(written: str, match: str) -> None:
    rejected(doc(f"title: t\nx: {written}\n"), line=6, field="x", match=match)
    rejected(doc(f"v:\n  w: [1, {written}]\n"), line=6, field="v.w[1]", match=match)
    if len(written) < 1024 and not written.startswith("-"):  # YAML's limits on a plain key
        rejected(doc(f"{written}: x\n"), line=5, field=None, match=match)
    assert parser.parse(doc(f"x: '{written}'\n")).front_matter.model_extra == {"x": written}


@pytest.mark.parametrize("written", ["0x20", "020", "1_0", "1:00", ".inf"])
def test_requires_counts_refuse_other_number_forms(written: str) -> None:
    rejected(doc(f"requires:\n  qubits: {written}\n"), line=5, field="requires.qubits", match="integer")


def test_number_refusal_names_deep_sequence_items() -> None:
    rejected(doc("a:\n  - 1\n  - [2, 99999999999999999999]\n"), line=7, field="a[1][1]", match="18 digits")


def test_a_long_path_is_shortened_in_errors() -> None:
    key = "k" * 1000
    err = rejected(doc(f"? {key}\n: [1, *x]\n"), line=6, field=key[:199] + "…", match="aliases")
    assert len(err.field or "") == 200


def test_long_tag_is_shortened_in_errors() -> None:
    err = rejected(doc(f"x: !{'t' * 5000} 1\n"), line=5, field="x", match="tags")
    assert len(err.message) < 200


def test_long_permission_entry_is_shortened_in_errors() -> None:
    err = rejected(doc(f"permissions:\n  read: ['{'x' * 5000}']\n"), line=5, field="permissions.read")
    assert len(err.message) < 400


@pytest.mark.parametrize(
    ("schema", "line", "match"),
    [
        ("[" * 100_000, 9, "nested deeper than 64 levels"),
        ('{"a": ' + "9" * 5000 + "}", 9, "number longer than 40 characters"),
        ('{"maximum": NaN}', 8, "has NaN"),
        ('{"maximum": 1e999999}', 8, "too large"),
        ('{"a":\n  -Infinity}', 8, "has -Infinity"),
    ],
)
def test_schema_json_bombs(schema: str, line: int, match: str) -> None:
    # lines: 5 ---, 6 # T, 7 ## Input_Schema, 8 fence, 9 the JSON
    rejected(doc(body=f"# T\n## Input_Schema\n```json\n{schema}\n```\n"), line=line, match=match)


def test_schema_json_at_the_depth_limit() -> None:
    schema = '{"a": ' + "[" * 63 + "]" * 63 + "}"
    assert parser.parse(doc(body=f"## Output_Schema\n```json\n{schema}\n```\n")).code_blocks


def test_sections_and_code_blocks_are_counted() -> None:
    """A document is a handful of sections and code blocks; a million of them at the size cap cost
    seconds to model, so their number is bounded (request_too_large with the line)."""
    from mcp_server.home import example_workflow

    head = example_workflow().split("\n---\n", 1)[0] + "\n---\n"
    parser.parse(head + "## S\n" * 999)
    parser.parse(head + "## Code_Blocks\n" + "```x\n```\n" * 999)
    with pytest.raises(RequestTooLarge, match="sections"):
        parser.parse(head + "## S\n" * 1003)
    with pytest.raises(RequestTooLarge, match="code blocks") as info:
        parser.parse(head + "## Code_Blocks\n" + "```x\n```\n" * 1001)
    assert info.value.details == {"requested": 1001, "allowed": 1000}
