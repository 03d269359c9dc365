"""A strict YAML subset for front matter, built from the parser's event stream.

PyYAML's loaders construct aliases, merge keys, tags and timestamps and keep the last of duplicate
keys. Front matter decides permissions, so it is read from the raw events instead (libyaml's C parser
when present) and anything outside a plain subset is refused with its line number:

- aliases and anchors (no billion-laughs, no shared nodes), explicit tags, merge keys (`<<`)
- duplicate keys, keys that are not strings (`1:`, `on:`, `null:`)
- nesting deeper than `max_depth`, more than one document

Plain scalars resolve as YAML 1.1 booleans, integers, floats and nulls; everything else - timestamps
included - stays a string, so `created_at` is exactly the text that was written.
"""

from __future__ import annotations

import functools
from typing import Any, NoReturn

import yaml
from yaml import events
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingEndEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from mcp_server.errors import InvalidDocument

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


_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
_TYPED_TAGS = {
    "tag:yaml.org,2002:bool": _CONSTRUCTOR.construct_yaml_bool,
    "tag:yaml.org,2002:int": _CONSTRUCTOR.construct_yaml_int,
    "tag:yaml.org,2002:float": _CONSTRUCTOR.construct_yaml_float,
    "tag:yaml.org,2002:null": _CONSTRUCTOR.construct_yaml_null,
}


def _line(event: events.Event, offset: int) -> int:
    mark = event.start_mark
    return (mark.line if mark is not None else 0) + offset


def _is_plain(event: events.ScalarEvent) -> bool:
    # The pure-Python parser reports plain style as None, libyaml as "".
    return not event.style and event.implicit[0]


@functools.lru_cache(maxsize=4096)
def _plain_tag(value: str) -> str:
    return _RESOLVER.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call,no-any-return]


def _events(text: str) -> list[events.Event]:
    parser = _Parser(text)
    stream: list[events.Event] = []
    while True:
        event = parser.get_event()
        assert event is not None
        stream.append(event)
        if isinstance(event, events.StreamEndEvent):
            return stream


def _scalar(event: events.ScalarEvent) -> Any:
    if _is_plain(event):
        tag = (
            _plain_tag(event.value)
            if len(event.value) <= 64
            else _RESOLVER.resolve(  # type: ignore[no-untyped-call]
                ScalarNode, event.value, (True, False)
            )
        )
        construct = _TYPED_TAGS.get(tag)
        if construct is not None:
            return construct(ScalarNode(tag, event.value))
    return event.value


def load(text: str, *, max_depth: int, line_offset: int = 1, cut: int | None = None) -> dict[str, Any]:
    """Parse one YAML block mapping. `line_offset` maps parser lines to document lines (1-based).

    `cut` (a 0-based line of `text`) names a place lines were removed from: no node other than the
    top-level mapping may start before it and end after it, so the removed lines cannot have been
    part of another value.
    """
    try:
        stream = _events(text)
    except yaml.MarkedYAMLError as exc:
        line = (exc.problem_mark.line + line_offset) if exc.problem_mark is not None else None
        raise InvalidDocument(f"front matter is not valid YAML: {exc.problem or exc}", line=line) from None
    except yaml.YAMLError as exc:
        raise InvalidDocument(f"front matter is not valid YAML: {exc}") from None

    pos = 0
    last_end: Any = None  # end mark of the latest scalar or flow collection

    def fail(message: str, event: events.Event, path: str) -> NoReturn:
        raise InvalidDocument(message, field=path or None, line=_line(event, line_offset))

    def check_cut(start: Any, end: Any, path: str) -> None:
        if start.line < cut and (end.line > cut or (end.line == cut and end.column > 0)):
            raise InvalidDocument(
                "the signature entry sits inside another value; it must be a top-level entry of its own",
                field=path or None,
                line=cut + line_offset,  # type: ignore[operator]
            )

    def next_event() -> events.Event:
        nonlocal pos
        event = stream[pos]
        pos += 1
        return event

    def node(depth: int, path: str) -> Any:
        # Hot path (every value of every document): exact type dispatch, line numbers only on error.
        nonlocal last_end, pos
        event = stream[pos]
        pos += 1
        kind = type(event)
        if kind is ScalarEvent:
            if event.anchor is not None or event.tag is not None:  # type: ignore[attr-defined]
                refuse_decorations(event, path)
            last_end = event.end_mark
            if cut is not None:
                check_cut(event.start_mark, event.end_mark, path)
            return _scalar(event)  # type: ignore[arg-type]
        if kind is AliasEvent:
            fail("YAML aliases are not allowed", event, path)
        if event.anchor is not None or event.tag is not None:  # type: ignore[attr-defined]
            refuse_decorations(event, path)
        if depth >= max_depth:
            fail(f"nesting deeper than {max_depth} levels", event, path)
        if kind is SequenceStartEvent:
            items: list[Any] = []
            while type(stream[pos]) is not SequenceEndEvent:
                items.append(node(depth + 1, f"{path}[{len(items)}]"))
            close(event, next_event(), depth, path)
            return items
        mapping: dict[str, Any] = {}
        while type(stream[pos]) is not MappingEndEvent:
            key_event = stream[pos]
            if type(key_event) is not ScalarEvent:
                fail("mapping keys must be strings", key_event, path)
            if key_event.value == "<<" and _is_plain(key_event):
                fail("YAML merge keys (<<) are not allowed", key_event, path)
            key = node(depth + 1, path)
            if type(key) is not str:
                value = key_event.value
                fail(f"keys must be strings, not {type(key).__name__} ({value!r}); quote it", key_event, path)
            child = f"{path}.{key}" if path else key
            if key in mapping:
                fail("duplicate key", key_event, child)
            mapping[key] = node(depth + 1, child)
        close(event, next_event(), depth, path)
        return mapping

    def refuse_decorations(event: events.Event, path: str) -> NoReturn:
        if event.anchor is not None:  # type: ignore[attr-defined]
            fail("YAML anchors are not allowed", event, path)
        fail(f"YAML tags are not allowed ({event.tag})", event, path)  # type: ignore[attr-defined]

    def close(start: events.Event, end: events.Event, depth: int, path: str) -> None:
        nonlocal last_end
        if getattr(start, "flow_style", False):
            last_end = end.end_mark
        if depth > 0 and cut is not None:  # a block collection ends where its last child ends
            check_cut(start.start_mark, last_end, path)

    if not isinstance(next_event(), events.StreamStartEvent):  # pragma: no cover
        raise InvalidDocument("front matter is not a YAML stream")
    if isinstance(stream[pos], events.StreamEndEvent):
        raise InvalidDocument("front matter is empty", line=line_offset)
    next_event()  # DocumentStartEvent
    first = stream[pos]
    if not isinstance(first, events.MappingStartEvent):
        raise InvalidDocument("front matter must be a YAML mapping of fields", line=_line(first, line_offset))
    if first.flow_style:
        raise InvalidDocument(
            "front matter must be a block mapping (one `key: value` per line), not a {flow} mapping",
            line=_line(first, line_offset),
        )
    result = node(0, "")
    next_event()  # DocumentEndEvent
    if not isinstance(stream[pos], events.StreamEndEvent):
        raise InvalidDocument(
            "front matter holds more than one YAML document", line=_line(stream[pos], line_offset)
        )
    return result  # type: ignore[no-any-return]
