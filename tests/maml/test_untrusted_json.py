"""untrusted_json.loads: bounds on size, depth and numbers, errors with lines, and its speed.

(Lives with the MAML tests because the schema blocks were its first user; signing, auth and the HTTP
layer use it too.) The differential check against `json.loads` is in test_fuzz_parsers.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest

from mcp_server import untrusted_json
from mcp_server.errors import InvalidDocument, RequestTooLarge

MiB = 1024 * 1024


def loads(text: str | bytes, **options: Any) -> Any:
    bounds: dict[str, Any] = {"max_bytes": 4 * MiB, "max_depth": 8, "max_number_digits": 20, "what": "body"}
    return untrusted_json.loads(text, **(bounds | options))


def refused(text: str | bytes, match: str, **options: Any) -> InvalidDocument:
    with pytest.raises(InvalidDocument, match=match) as info:
        loads(text, **options)
    assert "body" in info.value.message  # names what was parsed
    return info.value


@pytest.mark.parametrize(
    "text",
    ['{"a": [1, 2.5, -3e+2, true, false, null, "x\\"y"]}', "[]", "0", '"s"', ' {"k": {}} ', "1E5", "-0.0"],
)
def test_json_within_bounds_reads_like_json_loads(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


def test_size_is_checked_first() -> None:
    with pytest.raises(RequestTooLarge) as info:
        loads(b"\xff" * 11, max_bytes=10)
    assert info.value.details == {"requested": 11, "allowed": 10}
    with pytest.raises(RequestTooLarge) as info:
        loads("é" * 6, max_bytes=10)  # 6 characters, 12 bytes
    assert info.value.details == {"requested": 12, "allowed": 10}
    assert loads("[1]", max_bytes=3) == [1]


def test_not_utf8_and_not_unicode() -> None:
    refused(b'["\xff"]', r"not UTF-8 \(byte 2\)")
    refused('["\ud800"]', "unpaired surrogates")
    refused('\ufeff{"a": 1}', "not JSON")  # a byte-order mark is not JSON either


def test_depth() -> None:
    assert loads("[" * 8 + "]" * 8, max_depth=8) == [[[[[[[[]]]]]]]]
    err = refused("[" * 9 + "]" * 9, "nested deeper than 8 levels", max_depth=8)
    assert err.line == 1
    err = refused('{"a":\n[{"b":\n' + "[" * 20, "nested deeper than 8 levels", max_depth=8, line_offset=10)
    assert err.line == 13
    # Brackets inside strings do not count, escaped quotes included.
    assert loads('["[[[[[[[[[[", "\\"[[[[[[[[[[[", "\\\\"]', max_depth=1) == ["[" * 10, '"' + "[" * 11, "\\"]
    refused("[" * 100_000 + "]" * 100_000, "nested deeper than 8 levels")
    refused("[" * 100_000, "nested deeper than 8 levels")


def test_unbalanced_brackets_are_not_json() -> None:
    refused("[[]]]", "not JSON")
    refused("]" * 50 + "[" * 5, "not JSON")


def test_numbers() -> None:
    assert loads("[" + "9" * 20 + "]") == [int("9" * 20)]
    assert loads("-1.5e+10") == -1.5e10
    err = refused('{"a":\n' + "9" * 21 + "}", "has a number longer than 20 characters")
    assert err.line == 2
    refused("1." + "0" * 5000, "longer than 20 characters")
    refused("9" * 5000, "longer than 20 characters")
    assert loads('["' + "9" * 5000 + '"]') == ["9" * 5000]  # digits in a string are text
    refused("1e999999", "too large")
    refused("[-1e400]", "too large")
    for constant in ("NaN", "Infinity", "-Infinity"):
        refused(f"[{constant}]", f"has {constant}, which is not a JSON number")


def test_not_json_names_the_line() -> None:
    err = refused('{"a": 1,\n "b": }', "body is not JSON: Expecting value")
    assert err.line == 2
    assert refused("{", "not JSON", line_offset=4).line == 5


def test_duplicate_keys() -> None:
    assert loads('{"a": 1, "a": 2}') == {"a": 2}
    refused('{"a": 1, "a": 2}', "has the key 'a' twice", unique_keys=True)
    refused('[{"k": {"x": 1, "x": 1}}]', "has the key 'x' twice", unique_keys=True)
    assert loads('{"a": {"a": 1}}', unique_keys=True) == {"a": {"a": 1}}


def test_loads_object() -> None:
    bounds: dict[str, Any] = {"max_bytes": 100, "max_depth": 4, "max_number_digits": 20, "what": "header"}
    assert untrusted_json.loads_object('{"a": 1}', **bounds) == {"a": 1}
    with pytest.raises(InvalidDocument, match="header must be a JSON object"):
        untrusted_json.loads_object("[1]", **bounds)


def test_messages_never_quote_the_content() -> None:
    secret = "s3cr3t" * 10
    for text in (f'{{"{secret}": NaN}}', f'["{secret}", ' + "9" * 30 + "]", f'{{"{secret}": }}'):
        with pytest.raises(InvalidDocument) as info:
            loads(text)
        assert secret not in info.value.message


BODIES = {
    "one long string": json.dumps({"document": "x" * (4 * MiB - 20)}),
    "integers": "[" + "1," * (2 * MiB - 2) + "1]",
    "floats": "[" + "1.5," * (MiB - 2) + "1]",
    "empty arrays": "[" + "[]," * (4 * MiB // 3 - 2) + "[]]",
    "empty strings": "[" + '"",' * (4 * MiB // 3 - 2) + '""]',
    "escapes": '["' + "\\\\" * (2 * MiB - 4) + '"]',
    "deep": "[" * (2 * MiB) + "]" * (2 * MiB),
    "deep after wide": "[" + "[]," * (4 * MiB // 3 - 100) + "[" * 100 + "]" * 100 + "]",
    "depth 60 over and over": "[" + ",".join(["[" * 60 + "]" * 60] * (4 * MiB // 121 - 1)) + "]",
    "long number": "[" + "9" * (4 * MiB - 2) + "]",
    "40-character numbers": "[" + ",".join(["9" * 40] * (4 * MiB // 41 - 1)) + "]",
}


@pytest.mark.parametrize("name", BODIES, ids=list(BODIES))
def test_a_4_mib_body_checks_in_well_under_a_second(name: str) -> None:
    """The checks before json.loads (what json.loads itself costs is not ours to bound)."""
    data = BODIES[name].encode()
    assert 4 * MiB - 1000 <= len(data) <= 4 * MiB
    start = time.process_time()
    with contextlib.suppress(InvalidDocument):
        outside = untrusted_json._check_numbers(data, None, 40, "body", 0)
        untrusted_json._check_depth(data, outside, 64, "body", 0)
    checks = time.process_time() - start
    assert checks < 0.5, f"{name}: the checks took {checks:.2f} s"


def test_a_4_mib_document_in_a_body_parses_fast() -> None:
    start = time.process_time()
    assert loads(BODIES["one long string"], max_depth=64, max_number_digits=40)["document"][:1] == "x"
    assert time.process_time() - start < 0.5
