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

from typing import Any

import yaml
from yaml import events
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from mcp_server.errors import InvalidDocument

try:  # libyaml is about 8x faster; the pure-Python parser gives the same events.
    from yaml import CSafeLoader as _EventLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _EventLoader  # type: ignore[assignment]

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


def _scalar(event: events.ScalarEvent) -> Any:
    if _is_plain(event):
        tag = _RESOLVER.resolve(ScalarNode, event.value, (True, False))  # type: ignore[no-untyped-call]
        construct = _TYPED_TAGS.get(tag)
        if construct is not None:
            return construct(ScalarNode(tag, event.value))
    return event.value


def load(text: str, *, max_depth: int, line_offset: int = 1) -> dict[str, Any]:
    """Parse one YAML mapping. `line_offset` maps parser lines to document lines (1-based)."""
    try:
        stream = list(yaml.parse(text, Loader=_EventLoader))
    except yaml.MarkedYAMLError as exc:
        line = (exc.problem_mark.line + line_offset) if exc.problem_mark is not None else None
        raise InvalidDocument(f"front matter is not valid YAML: {exc.problem or exc}", line=line) from None
    except yaml.YAMLError as exc:
        raise InvalidDocument(f"front matter is not valid YAML: {exc}") from None

    pos = 0

    def next_event() -> events.Event:
        nonlocal pos
        event = stream[pos]
        pos += 1
        return event

    def node(depth: int, path: str) -> Any:
        event = next_event()
        where = _line(event, line_offset)
        if isinstance(event, events.AliasEvent):
            raise InvalidDocument("YAML aliases are not allowed", field=path or None, line=where)
        if isinstance(event, events.NodeEvent) and event.anchor is not None:
            raise InvalidDocument("YAML anchors are not allowed", field=path or None, line=where)
        if isinstance(event, events.ScalarEvent | events.CollectionStartEvent) and event.tag is not None:
            raise InvalidDocument(f"YAML tags are not allowed ({event.tag})", field=path or None, line=where)
        if isinstance(event, events.ScalarEvent):
            return _scalar(event)
        if depth >= max_depth:
            raise InvalidDocument(f"nesting deeper than {max_depth} levels", field=path or None, line=where)
        if isinstance(event, events.SequenceStartEvent):
            items: list[Any] = []
            while not isinstance(stream[pos], events.SequenceEndEvent):
                items.append(node(depth + 1, f"{path}[{len(items)}]"))
            next_event()
            return items
        if isinstance(event, events.MappingStartEvent):
            mapping: dict[str, Any] = {}
            while not isinstance(stream[pos], events.MappingEndEvent):
                key_event = stream[pos]
                key_line = _line(key_event, line_offset)
                if (
                    isinstance(key_event, events.ScalarEvent)
                    and _is_plain(key_event)
                    and key_event.value == "<<"
                ):
                    raise InvalidDocument(
                        "YAML merge keys (<<) are not allowed", field=path or None, line=key_line
                    )
                if not isinstance(key_event, events.ScalarEvent):
                    raise InvalidDocument("mapping keys must be strings", field=path or None, line=key_line)
                key = node(depth + 1, path)
                if not isinstance(key, str):
                    raise InvalidDocument(
                        f"keys must be strings, not {type(key).__name__} ({key_event.value!r}); quote it",
                        field=path or None,
                        line=key_line,
                    )
                child = f"{path}.{key}" if path else key
                if key in mapping:
                    raise InvalidDocument("duplicate key", field=child, line=key_line)
                mapping[key] = node(depth + 1, child)
            next_event()
            return mapping
        raise InvalidDocument(f"unexpected YAML event {type(event).__name__}", line=where)  # pragma: no cover

    if not isinstance(next_event(), events.StreamStartEvent):  # pragma: no cover
        raise InvalidDocument("front matter is not a YAML stream")
    if isinstance(stream[pos], events.StreamEndEvent):
        raise InvalidDocument("front matter is empty", line=line_offset)
    next_event()  # DocumentStartEvent
    if not isinstance(stream[pos], events.MappingStartEvent):
        raise InvalidDocument(
            "front matter must be a YAML mapping of fields", line=_line(stream[pos], line_offset)
        )
    result = node(0, "")
    next_event()  # DocumentEndEvent
    if not isinstance(stream[pos], events.StreamEndEvent):
        raise InvalidDocument(
            "front matter holds more than one YAML document", line=_line(stream[pos], line_offset)
        )
    return result  # type: ignore[no-any-return]
