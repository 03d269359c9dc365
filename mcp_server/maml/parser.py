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

import functools
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from mcp_server import untrusted_json
from mcp_server.errors import InvalidDocument, RequestTooLarge
from mcp_server.maml.model import SECTION_NAMES, CodeBlock, FrontMatter, MamlDocument, Section

DELIMITER = "---"
_SIGNATURE_LINE = re.compile(r"^signature:(?:[ \t]|$)")
_SIGNATURE_FIELD = re.compile(
    r"""^[ ][ ](?P<key>[a-z_]+):[ ]
        (?:"(?P<quoted>[^"\\]*)"|'(?P<single>[^']*)'|(?P<plain>[A-Za-z0-9][^\s#'"]*))[ \t]*$""",
    re.VERBOSE,
)
_SIGNATURE_KEY = re.compile(r"[a-z_]+")
# Bounds on the JSON of `## Input_Schema` / `## Output_Schema` blocks (docs/maml.md, section 5). The
# schemas are later walked recursively (jsonschema), so their depth is bounded well below Python's
# recursion limit; 64 levels is far more than any real schema uses.
SCHEMA_MAX_DEPTH = 64
SCHEMA_MAX_NUMBER_CHARS = 40
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


def _splitlines(text: str, piece: int = 65_536) -> list[str]:
    """`text.splitlines(keepends=True)`, in pieces cut after a line feed (a safe place: the text's
    line endings are normalised, so no CR precedes one), so that a 1 MiB text does not hold the GIL
    for one long C call."""
    if len(text) <= piece:
        return text.splitlines(keepends=True)
    lines: list[str] = []
    start = 0
    while start < len(text):
        cut = text.find("\n", start + piece)
        cut = len(text) if cut < 0 else cut + 1
        lines += text[start:cut].splitlines(keepends=True)
        start = cut
    return lines


def split(text: str) -> Split:
    lines = _splitlines(text)
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


MAX_SECTIONS = 1000  # a workflow has a handful; each costs a model object, so the count is bounded
MAX_CODE_BLOCKS = 1000


def _too_many(what: str, allowed: int, line: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"line {line}: more than {allowed} {what} in one document", requested=allowed + 1, allowed=allowed
    )


# The body reader works on positions in the body text, with regular expressions that find the lines
# that matter (a heading, a title, what may open or close a fence) in one C-level pass each: plain
# lines cost nothing in Python, and the number of lines that matter is bounded by the caps above.
# Lines are what `str.splitlines` makes them (the parser's line numbers), so the scan runs over a copy
# of the text with every other line separator turned into a line feed: same length, same positions.
# (The scan never sees the text's own characters where it matters: lines are cut from the text.)
_OTHER_SEPARATORS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_AS_LINE_FEEDS = str.maketrans(dict.fromkeys("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", "\n"))
_MARK = re.compile(r"^(?:## | {0,3}(?:`{3,}[^`\n]*$|~{3}))", re.MULTILINE)
_TITLE = re.compile(r"^# [^\S\n]*\S", re.MULTILINE)  # a `# ` line with text: the title, before any section


@functools.cache
def _closer(marker: str) -> re.Pattern[str]:
    """A line that closes a fence opened with `marker`: at most 3 spaces, then at least as many of the
    marker's character, then only white space."""
    return re.compile("^ {0,3}" + re.escape(marker[0]) + f"{{{len(marker)},}}" + r"[^\S\n]*$", re.MULTILINE)


_WINDOW = 65_536  # characters one regex pass may cover: the GIL is released between passes


def _search(pattern: re.Pattern[str], scan: str, at: int, stop: int) -> re.Match[str] | None:
    """`pattern.search(scan, at, stop)` in windows of about `_WINDOW` characters, each ending after a
    line feed (so `$` means what it means in the whole text): one pass over a whole 1 MiB document
    would hold the GIL, and so stall the event loop, for tens of milliseconds."""
    while at < stop:
        window = scan.find("\n", min(at + _WINDOW, stop))
        window = stop if window < 0 or window >= stop else window + 1
        found = pattern.search(scan, at, window)
        if found is not None:
            return found
        at = window
    return None


def _code(text: str, scan: str) -> str:
    """A code block's text: its lines, each ended by a line feed (as the line-by-line reader made it)."""
    if text == scan and (not text or text.endswith("\n")):
        return text
    return "".join(line if line.endswith("\n") else line + "\n" for line in text.splitlines(keepends=True))


def _body(text: str, first_line: int) -> tuple[str | None, list[Section], list[CodeBlock]]:
    """Title (`# ` with text, before any section), sections (`## `) and fenced code blocks of the body
    `text`, whose first line is line `first_line` of the document."""
    scan = text
    if _OTHER_SEPARATORS.search(text):
        # A CR before a LF is part of one line break (a CR then CRLF survives the normalisation to
        # LF), kept as white space on its line; every other separator becomes a line feed.
        scan = text.replace("\r\n", "\t\n").translate(_AS_LINE_FEEDS)
    end = len(scan)
    title: str | None = None
    sections: list[Section] = []
    blocks: list[CodeBlock] = []
    current: str | None = None
    section_line, section_at = 0, 0
    counted_to, counted = 0, first_line  # line numbers, counted incrementally (linear in all)

    def line_number(at: int) -> int:
        nonlocal counted_to, counted
        counted += scan.count("\n", counted_to, at)
        counted_to = at
        return counted

    def line_end(at: int) -> int:
        """Where the line starting at `at` ends (its separator excluded)."""
        found = scan.find("\n", at)
        return end if found < 0 else found

    at = 0
    while at < end:
        mark = _search(_MARK, scan, at, end)
        stop = end if mark is None else mark.start()
        if current is None and title is None:
            found = _search(_TITLE, scan, at, stop)
            if found is not None:
                title = text[found.start() : line_end(found.start())][2:].strip()
        if mark is None:
            break
        start = mark.start()
        after = line_end(start)
        line = text[start:after]
        number = line_number(start)
        following = min(after + 1, end)
        fence = _FENCE.match(line)
        if fence and not (fence["fence"][0] == "`" and "`" in fence["info"]):
            info = fence["info"].strip()
            closing = _search(_closer(fence["fence"]), scan, following, end)
            if closing is None:
                raise InvalidDocument("code block is not closed", line=number)
            if len(blocks) == MAX_CODE_BLOCKS:
                raise _too_many("code blocks", MAX_CODE_BLOCKS, number)
            code = _code(text[following : closing.start()], scan[following : closing.start()])
            blocks.append(
                CodeBlock(language=info.split()[0] if info else "", code=code, section=current, line=number)
            )
            at = min(line_end(closing.start()) + 1, end)
            continue
        if line.startswith("## "):
            if len(sections) == MAX_SECTIONS:
                raise _too_many("sections", MAX_SECTIONS, number)
            if current is not None:
                sections.append(
                    Section(name=current, line=section_line, text=text[section_at:start].strip("\n"))
                )
            current = line[3:].strip()
            if current in SECTION_NAMES and any(s.name == current for s in sections):
                raise InvalidDocument(f"section '## {current}' appears twice", line=number)
            section_line, section_at = number, following
        at = following
    if current is not None:
        sections.append(Section(name=current, line=section_line, text=text[section_at:].strip("\n")))
    return title, sections, blocks


def _check_schema_sections(sections: list[Section], blocks: list[CodeBlock], limits: Limits) -> None:
    for name in ("Input_Schema", "Output_Schema"):
        section = next((s for s in sections if s.name == name), None)
        if section is None:
            continue
        for block in (b for b in blocks if b.section == name):
            if block.language.lower() not in ("json", ""):
                continue
            try:
                schema = untrusted_json.loads(
                    block.code,
                    max_bytes=limits.max_bytes,
                    max_depth=SCHEMA_MAX_DEPTH,
                    max_number_digits=SCHEMA_MAX_NUMBER_CHARS,
                    what=f"'## {name}' code block",
                    line_offset=block.line,
                )
            except InvalidDocument as exc:
                if exc.line is not None:
                    raise
                raise InvalidDocument(exc.message, line=block.line) from None  # at least the block
            if not isinstance(schema, dict):
                raise InvalidDocument(f"'## {name}' must hold a JSON object (a JSON Schema)", line=block.line)


def _front_matter(prepared: Prepared, limits: Limits) -> FrontMatter:
    cut = prepared.signature.start - 1 if prepared.signature else None  # in front matter coordinates
    from mcp_server.maml import strict_yaml  # PyYAML loads on the first document, not at start-up

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
        parts = prepared.parts
        title, sections, blocks = _body("".join(parts.lines[parts.close + 1 :]), parts.close + 2)
        _check_schema_sections(sections, blocks, limits)
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
