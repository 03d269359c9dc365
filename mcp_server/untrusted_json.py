"""JSON from untrusted sources, parsed within bounds, in time linear in its size.

`json.loads` on hostile text fails in ways that are not errors of ours: an integer of more than
4,300 digits raises `ValueError` (and one just under the limit costs quadratic time), 100,000 nested
`[` raise `RecursionError`, `NaN`, `Infinity` and `1e999999` come back as floats no JSON reader
accepts, and duplicate keys silently keep the last value. `loads` refuses all of these with a
`MacroslowError`, so whatever a caller sends, the answer is a stable error code:

    loads(text, *, max_bytes, max_depth, max_number_digits, what, line_offset=0, unique_keys=False)

- `text`: `str`, or `bytes` that must be UTF-8 (RFC 8259; no UTF-16/32 guessing). Text with unpaired
  surrogates is refused.
- `max_bytes`: the size cap, in UTF-8 bytes, checked first: `RequestTooLarge` (`requested`,
  `allowed`).
- `max_depth`: the deepest nesting of arrays and objects accepted; `[1]` and `{"a": 1}` are depth 1,
  a scalar alone depth 0. Measured before `json.loads` runs, so `json.loads` never recurses deeper.
- `max_number_digits`: the longest number literal accepted, in characters (sign, digits, point and
  exponent included: `-1.5e+3` is 7). Checked before `json.loads` runs, so `int()` only ever sees short
  literals. Floats that overflow (`1e999`) and `NaN`, `Infinity`, `-Infinity` are refused.
- `what`: names the text in messages ("request body", "'## Input_Schema' code block", ...).
- `line_offset`: added to the 1-based line of the problem within `text`, for text embedded in a
  larger document (`line` is then a line of that document).
- `unique_keys`: refuse an object with the same key twice (RFC 7515 allows a JWS reader to insist).

Everything else wrong with the text is `InvalidDocument` whose message starts with `what` and says
what was wrong (quoting no content but, for a duplicate, the key, shortened), with `line` when known
(not for NaN, Infinity and overflowing floats, which the decoder's hooks see without a position).
Nothing else escapes: not `ValueError`, `RecursionError` nor `UnicodeDecodeError`.

`loads_object` is the same and also requires a JSON object.

Cost: the checks are a handful of C-speed passes over the bytes (`count`, `translate`, `find`,
`split`, `replace`), plus one walk over runs of brackets when a few passes do not settle the depth.
On the 2-core machine this was written on, the checks of a 4 MiB body took 7 ms when it is one long
string and at most 76 ms over the hostile shapes in tests/maml/test_untrusted_json.py, next to the
0.1 to 1 s `json.loads` itself takes on the larger of them. Floats cost a Python call each (the
overflow check): 4 MiB of `1.5,` takes about 1.6 times what `json.loads` does.
"""

from __future__ import annotations

import json
import math
import re
from functools import partial
from itertools import accumulate, takewhile
from operator import ge, neg
from typing import Any, NoReturn

from mcp_server.errors import InvalidDocument, RequestTooLarge

# bytes.translate tables. Number literals are runs of these characters outside strings: the only
# other letters outside strings are those of true, false and null, and a run they would form with a
# number (`1true`) is not JSON anyway.
_NUMBER_CHARS = b"0123456789+-.eE"
_NUMBER_RUNS = bytes(0x30 if i in _NUMBER_CHARS else 0x20 for i in range(256))
# Brackets (both kinds as `[` and `]`) and line feeds, everything else deleted.
_SKELETON = bytes.maketrans(b"{}", b"[]")
_NOT_SKELETON = bytes(i for i in range(256) if i not in b"[]{}\n")
_RUNS = re.compile(rb"\[+|\]+")
_STEP = [0] * 256
_STEP[ord("[")] = 1
_STEP[ord("]")] = -1


class _Refused(Exception):
    """Raised inside the decoder's hooks; becomes `InvalidDocument` with `what` before this message."""


def _outside_strings(data: bytes) -> bytes:
    """`data` with every string literal removed (quotes included), line feeds outside them kept.

    Escaped backslashes and then escaped quotes are dropped first, so every `"` left delimits a
    string. JSON strings cannot hold a raw line feed, so line numbers still count right.
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' not in data:
        return data
    return b"".join(data.split(b'"')[::2])


def _line(text: bytes, position: int, line_offset: int) -> int:
    return text.count(b"\n", 0, position) + 1 + line_offset


def _check_numbers(
    data: bytes, outside: bytes | None, limit: int, what: str, line_offset: int
) -> bytes | None:
    """Refuse a number literal longer than `limit` characters; return the outside text if computed."""
    too_long = b"0" * (limit + 1)
    if data.translate(_NUMBER_RUNS).find(too_long) < 0:
        return outside  # no such run anywhere, strings included
    if outside is None:
        outside = _outside_strings(data)
    position = outside.translate(_NUMBER_RUNS).find(too_long)
    if position >= 0:
        raise InvalidDocument(
            f"{what} has a number longer than {limit} characters", line=_line(outside, position, line_offset)
        )
    return outside


def _check_depth(data: bytes, outside: bytes | None, limit: int, what: str, line_offset: int) -> None:
    if data.count(b"[") + data.count(b"{") <= limit:
        return  # cannot nest deeper than it has brackets
    if outside is None:
        outside = _outside_strings(data)
    skeleton = outside.translate(_SKELETON, _NOT_SKELETON)  # only `[`, `]` and line feeds
    if not _deeper(skeleton.replace(b"\n", b""), limit):
        return
    # A bracket that goes deeper than the limit, and its line: in a run of `[` if there is one (the
    # usual bomb), else the first such bracket.
    within = skeleton.find(b"[" * (limit + 1))
    if within < 0:
        within = sum(1 for _ in takewhile(partial(ge, limit), accumulate(map(_STEP.__getitem__, skeleton))))
    line = skeleton.count(b"\n", 0, within) + 1 + line_offset
    raise InvalidDocument(f"{what} is nested deeper than {limit} levels", line=line)


def _deeper(brackets: bytes, limit: int) -> bool:
    """Whether `brackets` (only `[` and `]`) opens more than `limit` levels at some point.

    Each `replace` pass removes every innermost pair, which lowers the deepest level by exactly one
    when the brackets balance (by at most one otherwise), so `passes` plus the depth of what is left
    bounds the depth from above, exactly for JSON. A few C-speed passes settle most texts (wide ones
    empty out, deep ones show a run of `[`); when a pass stops gaining, what is left is walked once,
    a run of brackets at a time.
    """
    passes = 0
    while brackets:
        if b"[" * (limit + 1 - passes) in brackets:
            return True
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) * 4 > len(brackets) * 3:  # a pass gains little now (or nothing: unbalanced)
            return _depth(brackets) + passes > limit
        brackets, passes = shorter, passes + 1
    return False


def _depth(brackets: bytes) -> int:
    """The deepest level `brackets` (only `[` and `]`, not empty) reaches, walked run by run."""
    lengths = list(map(len, _RUNS.findall(brackets)))
    closing = 1 if brackets[0] == ord("[") else 0  # runs alternate: these are the `]` runs
    lengths[closing::2] = map(neg, lengths[closing::2])
    return max(accumulate(lengths))


def loads(
    text: str | bytes,
    *,
    max_bytes: int,
    max_depth: int,
    max_number_digits: int,
    what: str,
    line_offset: int = 0,
    unique_keys: bool = False,
) -> Any:
    """Parse untrusted JSON within the bounds (module docstring), or raise `InvalidDocument` /
    `RequestTooLarge`."""
    if isinstance(text, str):
        if len(text) > max_bytes:  # at least this many bytes: do not encode a huge text to say so
            raise RequestTooLarge(f"{what} is larger than the limit", requested=len(text), allowed=max_bytes)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidDocument(f"{what} contains unpaired surrogates; it must be valid Unicode") from None
    else:
        data = bytes(text)
    if len(data) > max_bytes:
        raise RequestTooLarge(f"{what} is larger than the limit", requested=len(data), allowed=max_bytes)
    if not isinstance(text, str):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidDocument(f"{what} is not UTF-8 (byte {exc.start})") from None

    outside = _check_numbers(data, None, max_number_digits, what, line_offset)
    _check_depth(data, outside, max_depth, what, line_offset)

    try:
        return (_UNIQUE if unique_keys else _DECODER).decode(text)
    except _Refused as exc:
        raise InvalidDocument(f"{what} {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidDocument(f"{what} is not JSON: {exc.msg}", line=exc.lineno + line_offset) from None
    except (ValueError, RecursionError, MemoryError):  # pragma: no cover - the checks above prevent these
        raise InvalidDocument(f"{what} is not JSON") from None


def loads_object(
    text: str | bytes,
    *,
    max_bytes: int,
    max_depth: int,
    max_number_digits: int,
    what: str,
    line_offset: int = 0,
    unique_keys: bool = False,
) -> dict[str, Any]:
    """`loads`, and the value must be a JSON object."""
    value = loads(
        text,
        max_bytes=max_bytes,
        max_depth=max_depth,
        max_number_digits=max_number_digits,
        what=what,
        line_offset=line_offset,
        unique_keys=unique_keys,
    )
    if not isinstance(value, dict):
        raise InvalidDocument(f"{what} must be a JSON object")
    return value


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused("has a number too large to represent")
    return value


def _constant(name: str) -> NoReturn:
    raise _Refused(f"has {name}, which is not a JSON number")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"has the key {_short(key)!r} twice")
            seen.add(key)
    return result


# Built once: json.loads(text, **hooks) would build a decoder (and its C scanner) on every call.
# The C scanner keeps no state between calls that matters (its key memo is cleared each time).
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_constant)
_UNIQUE = json.JSONDecoder(parse_float=_finite, parse_constant=_constant, object_pairs_hook=_unique)


def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
