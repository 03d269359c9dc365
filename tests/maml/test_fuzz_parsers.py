"""Fuzzing the parsers of untrusted text: whatever comes in, the answer is a `MacroslowError` or a
value, in bounded time.

Targets: `parser.parse`, `parser.prepare`, `signing.parse_detached`, `signing.inspect_signature`
(with a real key store) and `untrusted_json.loads`. Inputs: arbitrary text and bytes, documents
built from hostile pieces (numbers of every YAML 1.1 shape and length, anchors, tags, deep and wide
collections, quotes, `signature:` lines, fences, schema blocks of hostile JSON), mutations of real
documents, and the known bombs as explicit examples (a 5,000-digit integer, 1 MB of sexagesimal
scalars, 100,000 nested `[`, `NaN`, `1e999999`).

`untrusted_json.loads` is also checked differentially against `json.loads`: it returns what
`json.loads` returns exactly when the text is JSON within the bounds, and refuses otherwise.

Each call must finish within `BOUND` seconds of CPU time (`time.process_time`, so a loaded machine
does not make it flaky); the inputs here are at most a few tens of kilobytes apart from the bombs,
which are a megabyte. Hypothesis' own deadline is off for the same reason, and its example database
is off so that a run writes nothing.
"""

from __future__ import annotations

import json
import math
import re
import string
import time
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mcp_server import signing, untrusted_json
from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import InvalidDocument, MacroslowError, RequestTooLarge, SignatureInvalid
from mcp_server.maml import parser, strict_yaml

FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
BOUND = 2.0  # seconds of CPU time for one call; far above what any input here needs
HEAD = '---\nmaml_version: "2.0"\nid: urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f\ntype: workflow\n'
DETACHED_HEAD = (
    '{"format": "maml-detached-signature/1", "algorithm": "ML-DSA-65", "key_id": "x", "value": "x"'
)

# -- the known bombs ----------------------------------------------------------------------------

DIGITS_5000 = "9" * 5000
SEXAGESIMAL_1MB = "1" + ":59" * 340_000  # about 1 MB: one scalar
SEXAGESIMAL_LINES = "".join(f"k{i}: 1" + ":59" * 30 + "\n" for i in range(10_000))  # about 1 MB
DEEP_JSON = "[" * 100_000 + "]" * 100_000
# (document, None if it parses, TOO_MANY if it holds more values than a front matter may, else the
# field and line named in the refusal)
TOO_MANY = ("values", 0)
BOMB_DOCUMENTS = [
    (HEAD + f"n: {DIGITS_5000}\n---\n", ("n", 5)),
    (HEAD + f"requires:\n  qubits: {DIGITS_5000}\n---\n", ("requires.qubits", 6)),
    (HEAD + f"x: {SEXAGESIMAL_1MB}\n---\n", None),
    (HEAD + SEXAGESIMAL_LINES + "---\n", TOO_MANY),
    (HEAD + "x: 1.0e+999999\n---\n", ("x", 5)),
    (HEAD + f"x: 1.{DIGITS_5000}\n---\n", ("x", 5)),
    (HEAD + "---\n## Input_Schema\n```json\n" + DEEP_JSON + "\n```\n", (None, 8)),
    (HEAD + '---\n## Output_Schema\n```json\n{"maximum": NaN}\n```\n', (None, 7)),
    (HEAD + '---\n## Output_Schema\n```json\n{"maximum": 1e999999}\n```\n', (None, 7)),
    (HEAD + '---\n## Output_Schema\n```json\n{"maximum": ' + DIGITS_5000 + "}\n```\n", (None, 8)),
]
BOMB_JSON = [
    DEEP_JSON,
    "[" * 100_000,
    '{"a":' * 100_000,
    "[" + DIGITS_5000 + "]",
    "-" + DIGITS_5000,
    "1." + DIGITS_5000,
    "NaN",
    "[Infinity]",
    '{"a": -Infinity}',
    "1e999999",
    "[1e999999]",
    '"' + "\\" * 100_001 + '"',
]


def within_bound(call: Callable[[], Any]) -> Any:
    """Run `call`; anything it raises must be a MacroslowError; it must take less than BOUND."""
    start = time.process_time()
    try:
        return call()
    except MacroslowError as exc:
        return exc
    finally:
        elapsed = time.process_time() - start
        assert elapsed < BOUND, f"took {elapsed:.2f} s of CPU time"


# -- strategies ---------------------------------------------------------------------------------

NUMBERISH = st.one_of(
    st.from_regex(r"\A[-+]?[0-9]{1,40}\Z"),
    st.from_regex(r"\A[-+]?[0-9]{0,25}\.[0-9]{0,25}([eE][-+]?[0-9]{1,6})?\Z"),
    st.from_regex(r"\A[-+]?[0-9]{1,3}(:[0-9]{1,2}){1,20}(\.[0-9]*)?\Z"),
    st.from_regex(r"\A[-+]?0[xob][0-9a-fA-F_]{1,30}\Z"),
    st.from_regex(r"\A[-+]?[0-9][0-9_]{0,30}\Z"),
    st.sampled_from(
        [
            ".inf",
            "-.Inf",
            ".nan",
            "~",
            "null",
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "2025-10-18",
            "2025-10-18T10:00:00Z",
        ]
    ),
    st.integers(min_value=20, max_value=6000).map(lambda n: "9" * n),
)
WORD = st.text(alphabet=string.ascii_letters + string.digits + "_-./:@", min_size=1, max_size=12)
PUNCT = st.sampled_from(
    ["&a ", "*a", "!!str ", "! ", "!x ", "<<", "? ", "- ", "|", ">", "#c", "'", '"', "\\", "\t"]
)


def _scalar() -> st.SearchStrategy[str]:
    return st.one_of(
        NUMBERISH,
        WORD,
        WORD.map(lambda w: f'"{w}"'),
        WORD.map(lambda w: f"'{w}'"),
        st.builds(lambda p, w: p + w, PUNCT, WORD),
    )


def _flow(depth: int) -> st.SearchStrategy[str]:
    leaf = _scalar()
    if depth == 0:
        return leaf
    inner = _flow(depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, max_size=6).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(WORD, inner), max_size=5).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
        ),
        st.integers(min_value=1, max_value=40).map(lambda n: "[" * n + "1" + "]" * n),
    )


def _front_matter_line() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda k, v: f"{k}: {v}\n", WORD, _flow(3)),
        st.builds(lambda v: f"requires:\n  qubits: {v}\n  shots: {v}\n", NUMBERISH),
        st.builds(lambda v: f"permissions:\n  read: {v}\n", _flow(2)),
        st.builds(lambda v: f"created_at: {v}\nmaml_version_extra: {v}\n", NUMBERISH),
        st.builds(lambda k, v: f"{k}:\n  - {v}\n  - {v}\n", WORD, _scalar()),
        st.sampled_from(
            [
                "signature:\n",
                'signature:\n  algorithm: "ML-DSA-65"\n  key_id: "0011223344556677"\n  value: "AAAA"\n',
                "signature: {a: 1}\n",
                'title: "Hello\nsignature: evil\nworld"\n',
                "a: &x [1, 2]\nb: *x\n",
                "<<: {a: 1}\n",
                "? [a]\n: b\n",
                "...\n--- \nx: 1\n",
                "x: |\n  block\n  text\n",
                "\t\n",
                "x: 'unterminated\n",
            ]
        ),
    )


def _json_text(depth: int) -> st.SearchStrategy[str]:
    leaf = st.one_of(
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(
            ["NaN", "Infinity", "-Infinity", "1e999999", "-1e400", "true", "null", '"\\"', "01", "-"]
        ),
        st.integers(min_value=30, max_value=6000).map(lambda n: "1" * n),
        st.text(max_size=20).map(json.dumps),
        st.text(alphabet='[]{}",:\\ 0123456789e.-', max_size=20),
    )
    if depth == 0:
        return leaf
    inner = _json_text(depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, max_size=5).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(st.text(max_size=8), inner), max_size=4).map(
            lambda kv: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in kv) + "}"
        ),
        st.integers(min_value=1, max_value=200).map(lambda n: "[" * n + "0" + "]" * n),
        st.builds(lambda n, x: "{" * n + x, st.integers(min_value=1, max_value=100), inner),
    )


JSON_TEXT = _json_text(3)


def _document() -> st.SearchStrategy[str]:
    schema = st.builds(
        lambda name, lang, js: f"## {name}\n```{lang}\n{js}\n```\n",
        st.sampled_from(["Input_Schema", "Output_Schema"]),
        st.sampled_from(["json", "", "JSON"]),
        JSON_TEXT,
    )
    body = st.lists(
        st.one_of(
            schema, st.sampled_from(["# T\n", "## Intent\nx\n", "```\n", "~~~~\n", "## Code_Blocks\n"])
        ),
        max_size=4,
    ).map("".join)
    return st.builds(
        lambda lines, b: HEAD + "".join(lines) + "---\n" + b,
        st.lists(_front_matter_line(), max_size=6),
        body,
    )


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for position, drop, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at + drop :]
    return text


EDITS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10_000),
        st.integers(min_value=0, max_value=3),
        st.one_of(
            st.text(max_size=4), st.sampled_from(["\n", "---\n", "signature:", ": ", "[", "{", "9" * 50])
        ),
    ),
    min_size=1,
    max_size=6,
)


# -- the MAML parser ----------------------------------------------------------------------------


def check_document(document: str | bytes) -> None:
    within_bound(lambda: parser.prepare(document, parser.Limits()))
    within_bound(lambda: parser.parse(document))
    within_bound(lambda: parser.parse(document, body=False))


@FUZZ
@given(st.one_of(st.text(max_size=3000), st.binary(max_size=3000)))
def test_parse_arbitrary_text(document: str | bytes) -> None:
    check_document(document)
    if isinstance(document, str):
        check_document("---\n" + document)
        check_document(HEAD + document + "\n---\n")


@FUZZ
@given(_document())
@example(HEAD + "x: 1:2:3\n---\n")
def test_parse_hostile_documents(document: str) -> None:
    check_document(document)


@pytest.mark.parametrize(("document", "where"), BOMB_DOCUMENTS, ids=range(len(BOMB_DOCUMENTS)))
def test_parse_known_bombs(document: str, where: tuple[str | None, int] | None) -> None:
    assert len(document.encode()) <= parser.Limits().max_bytes
    result = within_bound(lambda: parser.parse(document))
    if where is None:
        assert not isinstance(result, MacroslowError), result
    elif where == TOO_MANY:
        assert isinstance(result, RequestTooLarge) and "more than 10000 values" in result.message, result
    else:
        assert isinstance(result, InvalidDocument), result
        assert (result.field, result.line) == where, result


@FUZZ
@given(EDITS)
def test_parse_mutated_example(example_text: str, edits: list[tuple[int, int, str]]) -> None:
    check_document(_mutate(example_text, edits))


# -- signatures ---------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(JSON_TEXT, st.text(max_size=500), st.binary(max_size=500)))
@example("[" + DIGITS_5000 + "]")
@example(DETACHED_HEAD + ', "n": ' + DIGITS_5000 + "}")
@example(DETACHED_HEAD + ', "n": ' + DEEP_JSON + "}")
@example(DETACHED_HEAD + ', "n": NaN}')
@example(DETACHED_HEAD + ', "n": 1e999999}')
@example(DETACHED_HEAD + ', "n": "' + "x" * 70_000 + '"}')
@example(b"\xff\xfe{\x00}\x00")
def test_parse_detached(text: str | bytes) -> None:
    result = within_bound(lambda: signing.parse_detached(text))
    assert isinstance(result, SignatureInvalid | RequestTooLarge | signing.Detached), result


@FUZZ
@given(st.one_of(_document(), st.text(max_size=1000)), st.one_of(st.none(), JSON_TEXT, st.text(max_size=300)))
def test_inspect_signature(keystore: KeyStore, document: str, detached: str | None) -> None:
    result = within_bound(lambda: signing.inspect_signature(document, keystore, detached=detached))
    assert isinstance(result, signing.Report | RequestTooLarge), result


def test_inspect_signature_known_bombs(keystore: KeyStore, example_text: str) -> None:
    for document, where in BOMB_DOCUMENTS:
        report = within_bound(lambda document=document: signing.inspect_signature(document, keystore))
        if where == TOO_MANY:  # a size limit: refused as an error, like a document over the size cap
            assert isinstance(report, RequestTooLarge), report
            continue
        assert isinstance(report, signing.Report) and not report.valid, report
    for bomb in [*BOMB_JSON, DETACHED_HEAD + ', "n": ' + "[" * 30_000 + "]" * 30_000 + "}"]:
        report = within_bound(
            lambda bomb=bomb: signing.inspect_signature(example_text, keystore, detached=bomb)
        )
        if len(bomb) > signing.DETACHED_MAX_BYTES:
            assert isinstance(report, RequestTooLarge), report
            continue
        assert isinstance(report, signing.Report) and not report.valid, report
        assert report.reasons and report.reasons[0].startswith("signature_invalid"), report.reasons


@FUZZ
@given(EDITS)
def test_inspect_mutated_signed_document(keystore: KeyStore, example_text: str, edits: Any) -> None:
    signed = signing.sign_document(example_text, keystore).signed_document
    result = within_bound(lambda: signing.inspect_signature(_mutate(signed, edits), keystore))
    assert isinstance(result, signing.Report), result


# -- the JSON helper ----------------------------------------------------------------------------

MAX_DEPTH, MAX_NUMBER = 16, 20


def _reference(text: str) -> tuple[str, Any]:
    """What `loads` must do with `text`, from `json.loads` and a walk of its result."""
    literals: list[str] = []

    def number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
        return lambda literal: literals.append(literal) or kind(literal)

    try:
        value = json.loads(
            text, parse_int=number(int), parse_float=number(float), parse_constant=number(float)
        )
    except (ValueError, RecursionError):
        return "refused", None
    if any(len(literal) > MAX_NUMBER or literal in ("NaN", "Infinity", "-Infinity") for literal in literals):
        return "refused", None
    if any(not math.isfinite(float(literal)) for literal in literals):
        return "refused", None

    def depth(node: Any) -> int:
        return 1 + max(map(depth, node), default=0) if isinstance(node, list | _Members) else 0

    # Depth of the text, not of the value: a repeated key's earlier values count too.
    structure = json.loads(text, object_pairs_hook=lambda pairs: _Members(v for _, v in pairs))
    return ("ok", value) if depth(structure) <= MAX_DEPTH else ("refused", None)


class _Members(tuple[Any, ...]):
    """An object's values, all of them, in order."""


def _loads(text: str | bytes, max_bytes: int = 64 * 1024) -> Any:
    return untrusted_json.loads(
        text, max_bytes=max_bytes, max_depth=MAX_DEPTH, max_number_digits=MAX_NUMBER, what="body"
    )


@FUZZ
@given(st.one_of(JSON_TEXT, st.text(max_size=300)))
@example("[" * 16 + "]" * 16)
@example("[" * 17 + "]" * 17)
@example('[{"a": [' * 6 + "]}]" * 6)
@example("1" * 20)
@example("-" + "1" * 19)
@example("1" * 21)
@example('"\\\\"')
@example('["\\"[[[[[[[[[[[[[[[[[[[["]')
@example("1e308")
@example("1.8e308")
@example('{"": ' + "[" * 16 + "]" * 16 + ', "": 0}')  # too deep, though the value kept is not
def test_json_helper_agrees_with_json_loads(text: str) -> None:
    result = within_bound(lambda: _loads(text))
    if any("\ud800" <= c <= "\udfff" for c in text):
        assert isinstance(result, InvalidDocument), result  # not Unicode, so not UTF-8 JSON
        return
    expected, value = _reference(text)
    if expected == "ok":
        assert not isinstance(result, MacroslowError), (text, result)
        assert result == value
    else:
        assert isinstance(result, InvalidDocument), (text, result)


@pytest.mark.parametrize("bomb", BOMB_JSON, ids=range(len(BOMB_JSON)))
def test_json_helper_known_bombs(bomb: str) -> None:
    result = within_bound(lambda: _loads(bomb, max_bytes=4 * 1024 * 1024))
    assert isinstance(result, InvalidDocument), result
    assert within_bound(lambda: _loads(bomb)).__class__ in (InvalidDocument, RequestTooLarge)


@FUZZ
@given(st.binary(max_size=500))
def test_json_helper_bytes(data: bytes) -> None:
    result = within_bound(lambda: _loads(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        assert isinstance(result, InvalidDocument), result
        return
    expected, value = _reference(text)
    if expected == "ok":
        assert result == value
    else:
        assert isinstance(result, InvalidDocument), result


@FUZZ
@given(st.text(alphabet="[]\n", max_size=400), st.integers(min_value=0, max_value=20))
def test_depth_check_against_a_reference(brackets: str, limit: int) -> None:
    steps = [1 if c == "[" else -1 for c in brackets if c != "\n"]
    deepest = max(accumulate(steps), default=0)
    balanced = sum(steps) == 0 and min(accumulate(steps), default=0) >= 0
    flat = brackets.replace("\n", "").encode()
    if balanced:
        assert untrusted_json._deeper(flat, limit) == (deepest > limit)
    elif deepest > limit:
        assert untrusted_json._deeper(flat, limit)  # never lets a deeper text through


# -- plain scalars ------------------------------------------------------------------------------


def _plain_reference(value: str) -> Any:
    """Section 2 of docs/maml.md, written out directly."""
    words = {"": None, "~": None, "null": None, "Null": None, "NULL": None}
    words |= dict.fromkeys(["true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"], True)
    words |= dict.fromkeys(["false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"], False)
    if value in words:
        return words[value]
    if re.fullmatch(r"[-+]?[0-9]+", value):
        digits = value.lstrip("+-")
        if len(digits) > 18:
            return InvalidDocument
        return value if len(digits) > 1 and digits[0] == "0" else int(value)
    match = re.fullmatch(r"([-+]?[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE]([-+][0-9]+))?", value)
    if match is None:
        return value
    if sum(c.isdigit() for c in match[1]) > 18 or (match[2] is not None and len(match[2]) - 1 > 3):
        return InvalidDocument
    number = float(value)
    return InvalidDocument if math.isinf(number) else number


@FUZZ
@given(st.one_of(NUMBERISH, st.text(alphabet="0123456789+-.eE:_xo~ln", max_size=30), st.text(max_size=10)))
@example("1.e+999")
@example("1234567890123456789.")
@example("-0")
@example("+")
@example("٣")
def test_plain_scalar_rules(value: str) -> None:
    expected = _plain_reference(value)
    start = time.process_time()
    try:
        got: Any = strict_yaml.plain_scalar(value)
    except InvalidDocument:
        got = InvalidDocument
    assert time.process_time() - start < BOUND
    assert got == expected and type(got) is type(expected), (value, got, expected)
    # Through the whole parser, when YAML reads the text as one plain scalar.
    try:
        events = list(yaml.parse(f"k: {value}\n", Loader=yaml.CSafeLoader))
    except yaml.YAMLError:
        return
    scalars = [e for e in events if isinstance(e, yaml.ScalarEvent)]
    if len(scalars) != 2 or scalars[1].value != value or scalars[1].style:
        return
    try:
        parsed = parser.parse(HEAD + f"k: {value}\n---\n").front_matter.model_extra
    except InvalidDocument as exc:
        assert expected is InvalidDocument, (value, exc)
        assert (exc.field, exc.line) == ("k", 5), exc
        return
    assert parsed is not None
    assert parsed["k"] == expected and type(parsed["k"]) is type(expected), (value, parsed)
