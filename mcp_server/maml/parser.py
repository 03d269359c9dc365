"""Reading MAML text: size cap, front matter split, strict YAML, schema, sections and code blocks.

Also the byte-exact canonical form that signatures cover (`canonical_bytes`, see docs/maml.md):
the document with line endings normalised to LF and the front matter's top-level `signature:` entry
(its line and every following line that starts with a space or a tab) removed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import ValidationError

from mcp_server.errors import InvalidDocument, RequestTooLarge
from mcp_server.maml import strict_yaml
from mcp_server.maml.model import SECTION_NAMES, CodeBlock, FrontMatter, MamlDocument, Section

DELIMITER = "---"
_SIGNATURE_LINE = re.compile(r"^signature:(?:[ \t]|$)")
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1024 * 1024
    max_depth: int = 8


def to_text(document: str | bytes, limits: Limits) -> str:
    """Check the size before anything else, then decode and normalise line endings to LF."""
    size = len(document) if isinstance(document, bytes) else len(document.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise RequestTooLarge(
            "document is larger than the configured limit", requested=size, allowed=limits.max_bytes
        )
    if isinstance(document, bytes):
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidDocument(f"document is not UTF-8 (byte {exc.start})") from None
    try:
        document.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidDocument("document contains unpaired surrogates; it must be valid Unicode") from None
    if "\x00" in document:
        line = document.count("\n", 0, document.index("\x00")) + 1
        raise InvalidDocument("document contains a NUL character", line=line)
    if document.startswith("\ufeff"):
        raise InvalidDocument("document starts with a byte-order mark; save it as UTF-8 without BOM", line=1)
    return document.replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True)
class Split:
    """Line indices (0-based, into `lines`) of the front matter between its two delimiters."""

    lines: list[str]
    close: int  # index of the closing delimiter line

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


def canonical_text(text: str) -> str:
    parts = split(text)
    drop = signature_lines(parts)
    return "".join(line for i, line in enumerate(parts.lines) if i not in drop)


def canonical_bytes(document: str | bytes, limits: Limits | None = None) -> bytes:
    """The bytes a MAML signature covers."""
    return canonical_text(to_text(document, limits or Limits())).encode("utf-8")


def replace_signature(text: str, block_lines: list[str]) -> str:
    """Drop any signature entry and append `block_lines` as the last front matter entry."""
    parts = split(text)
    drop = signature_lines(parts)
    kept = [line for i, line in enumerate(parts.lines[: parts.close]) if i not in drop]
    if kept and not kept[-1].endswith("\n"):  # pragma: no cover - split() guarantees a newline here
        kept[-1] += "\n"
    return "".join([*kept, *(line + "\n" for line in block_lines), *parts.lines[parts.close :]])


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
            stripped = line.strip()
            if stripped.startswith(marker[0] * len(marker)) and set(stripped) == {marker[0]}:
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
            if block.language not in ("json", ""):
                continue
            try:
                schema = json.loads(block.code)
            except json.JSONDecodeError as exc:
                raise InvalidDocument(
                    f"'## {name}' code block is not JSON: {exc.msg}", line=block.line + exc.lineno
                ) from None
            if not isinstance(schema, dict):
                raise InvalidDocument(f"'## {name}' must hold a JSON object (a JSON Schema)", line=block.line)


def parse(document: str | bytes, limits: Limits | None = None) -> MamlDocument:
    """Parse and validate a MAML document, or raise InvalidDocument / RequestTooLarge."""
    limits = limits or Limits()
    text = to_text(document, limits)
    parts = split(text)
    data = strict_yaml.load(parts.front_matter, max_depth=limits.max_depth, line_offset=2)
    try:
        front = FrontMatter.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        top = str(error["loc"][0]) if error["loc"] else ""
        line = _key_line(parts, top)
        message = error["msg"].removeprefix("Value error, ")
        raise InvalidDocument(message, field=field or None, line=line) from None
    title, sections, blocks = _body(parts.lines, parts.close + 1)
    _check_schema_sections(sections, blocks)
    return MamlDocument(
        front_matter=front, title=front.title or title, sections=sections, code_blocks=blocks, text=text
    )


def _key_line(parts: Split, key: str) -> int | None:
    if not key:
        return None
    pattern = re.compile(rf"^{re.escape(key)}\s*:")
    for index in range(1, parts.close):
        if pattern.match(parts.lines[index]):
            return index + 1
    return 2  # a missing required field: point at the start of the front matter
