"""A strict YAML subset for front matter, built from the parser's event stream.

PyYAML's loaders construct aliases, merge keys, tags and timestamps and keep the last of duplicate
keys. Front matter decides permissions, so it is read from the raw events instead (libyaml's C parser
when present), one event at a time, and anything outside a plain subset is refused with its line
number as soon as it is seen:

- aliases and anchors (no billion-laughs, no shared nodes), explicit tags, merge keys (`<<`)
- duplicate keys, keys that are not strings (`1:`, `on:`, `null:`)
- nesting deeper than `max_depth`, more than one document

Plain scalars are resolved here, not by YAML 1.1's implicit resolvers (whose sexagesimal and
unbounded integers cost quadratic time): a few anchored, linear checks give booleans, nulls,
decimal integers of at most 18 digits and decimal floats of at most 18 digits; everything else -
timestamps, `0x1A`, `1_000`, `1:30`, `.inf` - stays the string that was written, so `created_at` is
exactly the text that was written. A plain scalar shaped like a number with more digits is refused
rather than read as a string, so no number silently changes type with its length (docs/maml.md,
section 2). Every scalar costs time linear in its length, and the whole load time linear in the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

import yaml
from yaml import events
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from mcp_server.errors import InvalidDocument, RequestTooLarge

try:  # libyaml's parser is much faster; the pure-Python parser gives the same events.
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)


MAX_NUMBER_DIGITS = 18  # every such integer fits in 64 bits
MAX_EXPONENT_DIGITS = 3

# The plain scalars that are not strings. Booleans and nulls: the YAML 1.1 words PyYAML resolves
# (not `y`/`n`), so `on:` is still refused as a key and `write: yes` still means everyone.
_WORDS: dict[str, Any] = {
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys(("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"), True),
    **dict.fromkeys(("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"), False),
}
_LONGEST_WORD = max(map(len, _WORDS))
# Also looked up in this table: the integers 0 to 999 as written (no sign, no leading zero), the
# common numbers and the cheapest way to fill a document with numbers (`[1,1,...]`).
_WORDS.update((str(number), number) for number in range(1000))
_NUMBER_START = frozenset("0123456789+-.")
# Floats with a point (YAML 1.1's shapes without `_`, sexagesimal, .inf, .nan).
_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?|\.[0-9]+(?:[eE][-+][0-9]+)?")
_SHORT_FLOAT = 7  # "1.e+999": up to 7 characters no bound can be exceeded, so nothing to count
_INFINITIES = (math.inf, -math.inf)
_MAX_PATH = 200  # characters of a field path quoted in an error


class _Refused(Exception):
    """A scalar that is refused; `load` adds the field and line."""


_MISSING = object()


def plain_scalar(value: str) -> Any:
    """The value of a plain scalar: `None`, `bool`, `int`, `float` or the string itself.

    Raises `InvalidDocument` (without field or line) for a number with too many digits.
    """
    if len(value) <= _LONGEST_WORD:
        word = _WORDS.get(value, _MISSING)
        if word is not _MISSING:
            return word
    if value[0] not in _NUMBER_START:
        return value
    try:
        return _number(value)
    except _Refused as exc:
        raise InvalidDocument(str(exc)) from None


def _number(value: str) -> Any:
    """A plain scalar starting with a digit, a sign or a point: a number, or the string itself."""
    digits = value[1:] if value[0] in "+-" else value
    if digits.isdigit() and digits.isascii():  # [-+]?[0-9]+ without a regex
        if len(digits) > MAX_NUMBER_DIGITS:
            raise _Refused(f"a number may have at most {MAX_NUMBER_DIGITS} digits; quote it if it is text")
        if digits[0] == "0" and len(digits) > 1:
            return value  # 017: octal to YAML 1.1, decimal to YAML 1.2, so text here
        return int(value)
    if _FLOAT.fullmatch(value) is None:
        return value
    if len(value) > _SHORT_FLOAT:  # count digits only when there may be too many
        mantissa, _, exponent = value.lower().partition("e")
        if (
            len(mantissa) - 1 - (mantissa[0] in "+-") > MAX_NUMBER_DIGITS
            or len(exponent) - 1 > MAX_EXPONENT_DIGITS
        ):
            raise _Refused(
                f"a number may have at most {MAX_NUMBER_DIGITS} digits and {MAX_EXPONENT_DIGITS} in its "
                "exponent; quote it if it is text"
            )
    number = float(value)
    if number in _INFINITIES:
        raise _Refused("the number is too large; quote it if it is text")
    return number


def _line(event: events.Event, offset: int) -> int:
    mark = event.start_mark
    return (mark.line if mark is not None else 0) + offset


# A field path is built only for an error: (parent, key) for a mapping value, (parent, index) for a
# sequence item, None for the top level. Building strings for every value would cost the length of
# the path for each of them: quadratic for many items under a long key.
_Path = tuple[Any, str | int] | None


def _render(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, step = path
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}" if path is not None else step)
    text = "".join(reversed(parts))
    return text if len(text) <= _MAX_PATH else text[: _MAX_PATH - 1] + "…"


MAX_VALUES = 10_000


def load(
    text: str,
    *,
    max_depth: int,
    line_offset: int = 1,
    cut: int | None = None,
    max_values: int = MAX_VALUES,
) -> dict[str, Any]:
    """Parse one YAML block mapping. `line_offset` maps parser lines to document lines (1-based).

    At most `max_values` entries (mapping entries and sequence items, at every depth) are read: a
    front matter is a few dozen fields, and beyond this every further value costs time for nothing
    (`RequestTooLarge`, before the rest is read).

    `cut` (a 0-based line of `text`) names a place lines were removed from: no node other than the
    top-level mapping may start before it and end after it, so the removed lines cannot have been
    part of another value.
    """
    try:
        return _load(text, max_depth, line_offset, cut, max_values)
    except yaml.MarkedYAMLError as exc:
        line = (exc.problem_mark.line + line_offset) if exc.problem_mark is not None else None
        raise InvalidDocument(f"front matter is not valid YAML: {exc.problem or exc}", line=line) from None
    except yaml.YAMLError as exc:
        raise InvalidDocument(f"front matter is not valid YAML: {exc}") from None


def _load(text: str, max_depth: int, line_offset: int, cut: int | None, max_values: int) -> dict[str, Any]:
    # Events are pulled one at a time, so nothing is read (or kept) past the first problem.
    next_event: Callable[[], Any] = _Parser(text).get_event
    last_end: Any = None  # end mark of the latest scalar or flow collection
    budget = max_values  # entries and items still allowed

    def spend(event: Any) -> None:
        nonlocal budget
        budget -= 1
        if budget < 0:
            raise RequestTooLarge(
                f"front matter has more than {max_values} values (line {_line(event, line_offset)})",
                requested=max_values + 1,
                allowed=max_values,
            )

    def fail(message: str, event: events.Event, path: _Path) -> NoReturn:
        raise InvalidDocument(message, field=_render(path) or None, line=_line(event, line_offset))

    def check_cut(start: Any, end: Any, path: _Path) -> None:
        if start.line < cut and (end.line > cut or (end.line == cut and end.column > 0)):
            raise InvalidDocument(
                "the signature entry sits inside another value; it must be a top-level entry of its own",
                field=_render(path) or None,
                line=cut + line_offset,  # type: ignore[operator]
            )

    def scalar(event: Any, path: _Path) -> Any:
        # Hot path (every scalar of every document): attribute reads only, paths and lines on error.
        nonlocal last_end
        if event.anchor is not None or event.tag is not None:
            refuse_decorations(event, path)
        last_end = event.end_mark
        if cut is not None:
            check_cut(event.start_mark, last_end, path)
        value = event.value
        if event.style or not event.implicit[0]:  # quoted or block: a string (plain is None or "")
            return value
        if len(value) <= _LONGEST_WORD:  # plain_scalar, inlined
            word = _WORDS.get(value, _MISSING)
            if word is not _MISSING:
                return word
        if value[0] not in _NUMBER_START:
            return value
        try:
            return _number(value)
        except _Refused as exc:
            fail(str(exc), event, path)

    def node(event: Any, depth: int, path: _Path) -> Any:
        kind = type(event)
        if kind is ScalarEvent:
            return scalar(event, path)
        if kind is AliasEvent:
            fail("YAML aliases are not allowed", event, path)
        if event.anchor is not None or event.tag is not None:
            refuse_decorations(event, path)
        if depth >= max_depth:
            fail(f"nesting deeper than {max_depth} levels", event, path)
        if kind is SequenceStartEvent:
            items: list[Any] = []
            item = next_event()
            while type(item) is not SequenceEndEvent:
                spend(item)
                step = (path, len(items))
                items.append(scalar(item, step) if type(item) is ScalarEvent else node(item, depth + 1, step))
                item = next_event()
            close(event, item, depth, path)
            return items
        mapping: dict[str, Any] = {}
        key_event = next_event()
        while type(key_event) is not MappingEndEvent:
            spend(key_event)
            if type(key_event) is not ScalarEvent:
                fail("mapping keys must be strings", key_event, path)
            if key_event.value == "<<" and not key_event.style and key_event.implicit[0]:
                fail("YAML merge keys (<<) are not allowed", key_event, path)
            key = scalar(key_event, path)
            if type(key) is not str:
                fail(
                    f"keys must be strings, not {type(key).__name__} ({key_event.value!r}); quote it",
                    key_event,
                    path,
                )
            child = (path, key)
            if key in mapping:
                fail("duplicate key", key_event, child)
            value = next_event()
            mapping[key] = (
                scalar(value, child) if type(value) is ScalarEvent else node(value, depth + 1, child)
            )
            key_event = next_event()
        close(event, key_event, depth, path)
        return mapping

    def refuse_decorations(event: Any, path: _Path) -> NoReturn:
        if event.anchor is not None:
            fail("YAML anchors are not allowed", event, path)
        tag = event.tag
        fail(f"YAML tags are not allowed ({tag if len(tag) <= 60 else tag[:59] + '…'})", event, path)

    def close(start: Any, end: Any, depth: int, path: _Path) -> None:
        nonlocal last_end
        if start.flow_style:
            last_end = end.end_mark
        if depth > 0 and cut is not None:  # a block collection ends where its last child ends
            check_cut(start.start_mark, last_end, path)

    if not isinstance(next_event(), events.StreamStartEvent):  # pragma: no cover
        raise InvalidDocument("front matter is not a YAML stream")
    if isinstance(event := next_event(), events.StreamEndEvent):
        raise InvalidDocument("front matter is empty", line=line_offset)
    first = next_event()  # after the DocumentStartEvent
    if not isinstance(first, MappingStartEvent):
        raise InvalidDocument("front matter must be a YAML mapping of fields", line=_line(first, line_offset))
    if first.flow_style:
        raise InvalidDocument(
            "front matter must be a block mapping (one `key: value` per line), not a {flow} mapping",
            line=_line(first, line_offset),
        )
    result = node(first, 0, None)
    next_event()  # DocumentEndEvent
    if not isinstance(event := next_event(), events.StreamEndEvent):
        raise InvalidDocument(
            "front matter holds more than one YAML document", line=_line(event, line_offset)
        )
    return result  # type: ignore[no-any-return]
