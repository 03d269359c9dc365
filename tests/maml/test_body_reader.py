"""The body reader (`parser._body`) reads exactly what the line-by-line reader it replaced read
(kept here as `reference_body`), on generated bodies made of the lines that matter: headings,
titles, fences of both kinds and lengths, indented and not, closers with trailing text, and lines
ended by other separators. The new reader only skips plain lines in bulk."""

from __future__ import annotations

import re
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_server.errors import InvalidDocument, RequestTooLarge
from mcp_server.maml.model import SECTION_NAMES, CodeBlock, Section
from mcp_server.maml.parser import _body

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def reference_body(lines: list[str], first: int) -> tuple[str | None, list[Section], list[CodeBlock]]:
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


LINES = st.sampled_from(
    [
        "text\n",
        "\n",
        "# Title\n",
        "# \n",
        "#x\n",
        "## Intent\n",
        "## Context\n",
        "## Other\n",
        "```\n",
        "```python\n",
        "````\n",
        "~~~\n",
        "~~~~ json\n",
        "   ```\n",
        "    ```\n",
        "``` x\n",
        "```a`b\n",
        "```` \n",
        "~~~ \n",
        "code # not a title\n",
        "## Intent",
        "```",
        "line\x85",
        "\r",
        "## Intent\u2028",
        "# T\x0c",
        "~~~\x1e",
        "```\x85",
        "tail",
    ]
)


def outcome(read: Callable[[], object]) -> object:
    try:
        return read()
    except (InvalidDocument, RequestTooLarge) as exc:
        return type(exc).__name__, exc.message


@settings(max_examples=1500, deadline=None, database=None)
@given(st.lists(LINES, max_size=30))
def test_same_as_the_line_by_line_reader(parts: list[str]) -> None:
    text = "".join(parts).replace("\r\n", "\n")  # the parser's text: line endings normalised
    lines = text.splitlines(keepends=True)
    assert outcome(lambda: _body(text, 1)) == outcome(lambda: reference_body(lines, 0))


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(st.sampled_from(["a", "bb", "\n", "\r", "\x85", "\u2028", "\x0c", "x" * 30]), max_size=400),
    st.integers(1, 64),
)
def test_splitlines_in_pieces_is_splitlines(parts: list[str], piece: int) -> None:
    from mcp_server.maml.parser import _splitlines

    text = "".join(parts).replace("\r\n", "\n")  # what the parser splits is normalised so
    assert _splitlines(text, piece) == text.splitlines(keepends=True)


@settings(max_examples=1000, deadline=None, database=None)
@given(st.lists(LINES, max_size=30), st.integers(1, 12))
def test_same_when_read_in_small_windows(parts: list[str], window: int) -> None:
    """The regular expressions run over windows of the text (to release the GIL between them); with
    windows of a few characters, every window edge case is reached."""
    from mcp_server.maml import parser

    text = "".join(parts).replace("\r\n", "\n")
    lines = text.splitlines(keepends=True)
    saved, parser._WINDOW = parser._WINDOW, window
    try:
        assert outcome(lambda: _body(text, 1)) == outcome(lambda: reference_body(lines, 0))
    finally:
        parser._WINDOW = saved
