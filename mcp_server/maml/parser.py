"""Reading MAML text: size cap, front matter split, strict YAML, schema, sections and code blocks.

Also the byte-exact canonical form that signatures cover (see docs/maml.md): the document with line
endings normalised to LF and the front matter's top-level `signature:` entry - its line and every
following line that starts with a space or a tab - removed.

A document's meaning is read from exactly those canonical bytes plus the signature entry, so what is
signed is what is used. The signature entry may not sit inside another value (a multi-line string or
collection): the YAML reading of the canonical front matter is checked for any node spanning the place
the entry was cut from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from mcp_server.errors import InvalidDocument, RequestTooLarge
from mcp_server.maml import strict_yaml
from mcp_server.maml.model import SECTION_NAMES, CodeBlock, FrontMatter, MamlDocument, Section

DELIMITER = "---"
_SIGNATURE_LINE = re.compile(r"^signature:(?:[ \t]|$)")
_SIGNATURE_FIELD = re.compile(
    r"""^[ ][ ](?P<key>[a-z_]+):[ ]
        (?:"(?P<quoted>[^"\\]*)"|'(?P<single>[^']*)'|(?P<plain>[A-Za-z0-9][^\s#'"]*))[ \t]*$""",
    re.VERBOSE,
)
_SIGNATURE_KEY = re.compile(r"[a-z_]+")
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1024 * 1024
    max_depth: int = 8


def to_text(document: str | bytes, limits: Limits) -> str:
    """Check the size before anything else, then decode and normalise line endings to LF."""
    if isinstance(document, str):
        try:
            data = document.encode("utf-8")
        except UnicodeEncodeError:
            if len(document) > limits.max_bytes:  # at least this many bytes
                raise RequestTooLarge(
                    "document is larger than the configured limit",
                    requested=len(document),
                    allowed=limits.max_bytes,
                ) from None
            raise InvalidDocument("document contains unpaired surrogates; it must be valid Unicode") from None
    else:
        data = document
    if len(data) > limits.max_bytes:
        raise RequestTooLarge(
            "document is larger than the configured limit", requested=len(data), allowed=limits.max_bytes
        )
    if isinstance(document, bytes):
        try:
            document = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidDocument(f"document is not UTF-8 (byte {exc.start})") from None
    if document.startswith("\ufeff"):
        raise InvalidDocument("document starts with a byte-order mark; save it as UTF-8 without BOM", line=1)
    text = document.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InvalidDocument("document contains a NUL character", line=line)
    return text


@dataclass(frozen=True)
class Split:
    """A document cut into lines: line 0 opens the front matter, line `close` closes it."""

    lines: list[str]
    close: int

    @property
    def front_matter(self) -> str:
        return "".join(self.lines[1 : self.close])


def split(text: str) -> Split:
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\n") != DELIMITER:
        raise InvalidDocument(
            "a MAML document starts with a '---' line opening the YAML front matter", line=1
        )
    for index in range(1, len(lines)):
        if lines[index].rstrip("\n") == DELIMITER:
            return Split(lines, index)
    raise InvalidDocument("front matter is not closed by a '---' line", line=len(lines))


def signature_lines(parts: Split) -> range:
    """The lines of the top-level `signature:` entry (empty range when there is none)."""
    for index in range(1, parts.close):
        if _SIGNATURE_LINE.match(parts.lines[index]):
            end = index + 1
            while end < parts.close and parts.lines[end][:1] in (" ", "\t"):
                end += 1
            return range(index, end)
    return range(0)


class Prepared:
    """One pass over the text: split, signature lines and canonical form, each computed once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts = split(text)
        self.signature = signature_lines(self.parts)

    @cached_property
    def canonical_text(self) -> str:
        if not self.signature:
            return self.text
        lines = self.parts.lines
        return "".join(lines[: self.signature.start]) + "".join(lines[self.signature.stop :])

    @cached_property
    def canonical(self) -> bytes:
        return self.canonical_text.encode("utf-8")

    @property
    def canonical_front_matter(self) -> str:
        lines = self.parts.lines
        if not self.signature:
            return self.parts.front_matter
        return "".join(lines[1 : self.signature.start]) + "".join(
            lines[self.signature.stop : self.parts.close]
        )


def prepare(document: str | bytes, limits: Limits) -> Prepared:
    return Prepared(to_text(document, limits))


def canonical_text(text: str) -> str:
    return Prepared(text).canonical_text


def canonical_bytes(document: str | bytes, limits: Limits | None = None) -> bytes:
    """The bytes a MAML signature covers."""
    return prepare(document, limits or Limits()).canonical


def replace_signature(text: str, block_lines: list[str]) -> str:
    """Drop any signature entry and append `block_lines` as the last front matter entry."""
    prepared = Prepared(text)
    lines = prepared.parts.lines
    kept = [line for i, line in enumerate(lines[: prepared.parts.close]) if i not in prepared.signature]
    return "".join([*kept, *(line + "\n" for line in block_lines), *lines[prepared.parts.close :]])


def _signature_entry(prepared: Prepared) -> dict[str, str]:
    """Read the signature entry: `signature:` then two-space indented `key: value` lines (docs/maml.md)."""
    lines = prepared.parts.lines
    first = prepared.signature.start
    if lines[first].rstrip("\n").rstrip(" \t") != "signature:":
        raise InvalidDocument(
            "signature must be a block of indented `key: value` lines", field="signature", line=first + 1
        )
    fields: dict[str, str] = {}
    for index in range(first + 1, prepared.signature.stop):
        line = lines[index].rstrip("\n")
        key, sep, value = line[2:].partition(": ")
        if sep and line.startswith("  ") and _SIGNATURE_KEY.fullmatch(key) and _quoted_plainly(value):
            value = value[1:-1]  # the common, long case (the base64 value) without a regex scan
        else:
            match = _SIGNATURE_FIELD.match(line)
            if match is None:
                raise InvalidDocument(
                    "signature lines must read `  key: value`", field="signature", line=index + 1
                )
            key = match["key"]
            value = next(v for v in (match["quoted"], match["single"], match["plain"]) if v is not None)
        if key in fields:
            raise InvalidDocument("duplicate key", field=f"signature.{key}", line=index + 1)
        fields[key] = value
    return fields


def _quoted_plainly(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] == '"' and '"' not in value[1:-1] and "\\" not in value


def _body(lines: list[str], first: int) -> tuple[str | None, list[Section], list[CodeBlock]]:
    title: str | None = None
    sections: list[Section] = []
    blocks: list[CodeBlock] = []
    current: str | None = None
    section_start = 0
    section_text: list[str] = []
    fence: tuple[str, int, str, list[str]] | None = None  # (marker, line, language, code lines)

    def close_section() -> None:
        if current is not None:
            sections.append(Section(name=current, line=section_start, text="".join(section_text).strip("\n")))

    for index in range(first, len(lines)):
        raw = lines[index]
        line = raw.rstrip("\n")
        number = index + 1
        if fence is not None:
            marker, start, language, code = fence
            stripped = line.rstrip()
            closing = stripped.lstrip(" ")
            if (
                len(stripped) - len(closing) <= 3
                and len(closing) >= len(marker)
                and set(closing) == {marker[0]}
            ):
                blocks.append(CodeBlock(language=language, code="".join(code), section=current, line=start))
                fence = None
            else:
                code.append(raw if raw.endswith("\n") else raw + "\n")
            section_text.append(raw)
            continue
        match = _FENCE.match(line)
        if match and not (match["fence"][0] == "`" and "`" in match["info"]):
            info = match["info"].strip()
            fence = (match["fence"], number, info.split()[0] if info else "", [])
            section_text.append(raw)
            continue
        if line.startswith("# ") and title is None and current is None:
            title = line[2:].strip() or None
            continue
        if line.startswith("## "):
            close_section()
            current = line[3:].strip()
            if current in SECTION_NAMES and any(s.name == current for s in sections):
                raise InvalidDocument(f"section '## {current}' appears twice", line=number)
            section_start = number
            section_text = []
            continue
        section_text.append(raw)
    if fence is not None:
        raise InvalidDocument("code block is not closed", line=fence[1])
    close_section()
    return title, sections, blocks


def _check_schema_sections(sections: list[Section], blocks: list[CodeBlock]) -> None:
    for name in ("Input_Schema", "Output_Schema"):
        section = next((s for s in sections if s.name == name), None)
        if section is None:
            continue
        for block in (b for b in blocks if b.section == name):
            if block.language.lower() not in ("json", ""):
                continue
            try:
                schema = json.loads(block.code)
            except json.JSONDecodeError as exc:
                raise InvalidDocument(
                    f"'## {name}' code block is not JSON: {exc.msg}", line=block.line + exc.lineno
                ) from None
            if not isinstance(schema, dict):
                raise InvalidDocument(f"'## {name}' must hold a JSON object (a JSON Schema)", line=block.line)


def _front_matter(prepared: Prepared, limits: Limits) -> FrontMatter:
    cut = prepared.signature.start - 1 if prepared.signature else None  # in front matter coordinates
    data: dict[str, Any] = strict_yaml.load(
        prepared.canonical_front_matter, max_depth=limits.max_depth, line_offset=2, cut=cut
    )
    if "signature" in data:
        if prepared.signature:
            raise InvalidDocument(
                "duplicate key",
                field="signature",
                line=_key_line(prepared.parts, "signature", skip=prepared.signature),
            )
        raise InvalidDocument(
            "the signature entry must start a line as `signature:` (unquoted, at column 0)", field="signature"
        )
    if prepared.signature:
        data["signature"] = _signature_entry(prepared)
    try:
        return FrontMatter.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        top = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        raise InvalidDocument(message, field=field or None, line=_key_line(prepared.parts, top)) from None


def parse_prepared(prepared: Prepared, limits: Limits, *, body: bool = True) -> MamlDocument:
    front = _front_matter(prepared, limits)
    title: str | None = None
    sections: list[Section] = []
    blocks: list[CodeBlock] = []
    if body:
        title, sections, blocks = _body(prepared.parts.lines, prepared.parts.close + 1)
        _check_schema_sections(sections, blocks)
    return MamlDocument(
        front_matter=front,
        title=front.title or title,
        sections=sections,
        code_blocks=blocks,
        text=prepared.text,
        canonical=prepared.canonical,
    )


def parse(document: str | bytes, limits: Limits | None = None, *, body: bool = True) -> MamlDocument:
    """Parse and validate a MAML document, or raise InvalidDocument / RequestTooLarge.

    With `body=False` only the front matter is read (what signature checks need).
    """
    limits = limits or Limits()
    return parse_prepared(prepare(document, limits), limits, body=body)


def _key_line(parts: Split, key: str, skip: range = range(0)) -> int | None:
    if not key:
        return None
    pattern = re.compile(rf"""^(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*:""")
    for index in range(1, parts.close):
        if index not in skip and pattern.match(parts.lines[index]):
            return index + 1
    return 2  # a missing required field: point at the start of the front matter
