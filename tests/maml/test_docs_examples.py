"""Every fenced example in docs/maml.md does what the text around it says.

The examples are the `~~~` fences of the document. The first word of a fence's info string says what
kind of example it is, and `key=value` words after it add to that:

- `maml`: a whole MAML document; `parser.parse` accepts it.
- `maml-front-matter`: front matter lines; a minimal document (the three required fields, then these
  lines) is accepted.
- `maml-refused field=F line=N`: a whole document that `parser.parse` refuses with
  `invalid_document`, naming that field (none when `field=` is absent) and line.
- `id=NAME`: the example is also checked by `check_NAME` below, for what the surrounding text claims
  (a value, a digest, a function that must behave like the project's code).

Examples of any other kind (`python`, `json`, `text`) must carry an `id`, so nothing in the document
is left unchecked. The tables of section 2 are checked by the tests at the end, which first assert
that each example they check is written in the document.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.exceptions import InvalidSignature

from mcp_server import signing
from mcp_server.crypto import mldsa
from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import InvalidDocument
from mcp_server.maml import model, parser

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "maml.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
HEAD = '---\nmaml_version: "2.0"\nid: urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f\ntype: workflow\n'
KINDS = {"maml", "maml-front-matter", "maml-refused", "python", "json", "text"}


@dataclass
class Example:
    kind: str
    attrs: dict[str, str]
    body: str
    line: int  # of the opening fence in docs/maml.md
    id: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.attrs.get("id")

    def __str__(self) -> str:
        return f"docs/maml.md:{self.line} ({self.kind}{' ' + self.id if self.id else ''})"


def _examples() -> list[Example]:
    found: list[Example] = []
    lines = DOC.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("~~~"):
            assert not line.startswith("```"), f"line {index + 1}: use ~~~ fences for examples"
            index += 1
            continue
        kind, *words = line[3:].split()
        attrs = dict(word.split("=", 1) for word in words)
        end = next(i for i in range(index + 1, len(lines)) if lines[i].rstrip("\n") == "~~~")
        found.append(Example(kind, attrs, "".join(lines[index + 1 : end]), index + 1))
        index = end + 1
    return found


EXAMPLES = _examples()
BY_ID = {e.id: e for e in EXAMPLES if e.id}


@dataclass
class Context:
    keystore: KeyStore
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch


def _document(example: Example) -> str:
    return HEAD + example.body + "---\n" if example.kind == "maml-front-matter" else example.body


def test_the_document_has_examples_of_every_kind() -> None:
    kinds = {e.kind for e in EXAMPLES}
    assert kinds == KINDS, kinds
    assert len(BY_ID) == sum(1 for e in EXAMPLES if e.id), "an id is used twice"


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example(
    example: Example, keystore: KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert example.kind in KINDS, f"{example}: unknown kind"
    if example.kind in ("maml", "maml-front-matter"):
        parser.parse(_document(example))
    elif example.kind == "maml-refused":
        with pytest.raises(InvalidDocument) as info:
            parser.parse(example.body)
        assert info.value.field == example.attrs.get("field"), str(info.value)
        assert str(info.value.line) == example.attrs["line"], str(info.value)
    else:
        assert example.id is not None, f"{example}: a {example.kind} example needs an id=... check"
    if example.id is not None:
        name = f"check_{example.id.replace('-', '_')}"
        check: Callable[[Example, Context], None] | None = globals().get(name)
        assert check is not None, f"{example}: no {name} in this test"
        check(example, Context(keystore, tmp_path, monkeypatch))


# -- checks by id -------------------------------------------------------------------------------


def check_scalars(example: Example, ctx: Context) -> None:
    front = parser.parse(_document(example)).front_matter
    assert front.created_at == "2025-10-18T10:00:00Z"
    assert (front.requires.qubits, front.requires.shots) == (3, 1024)
    assert front.model_extra == {
        "settings": {
            "start": "10:30",
            "ratio": 2.5,
            "octal": "017",
            "big": 1.5e300,
            "flag": True,
            "none": None,
        }
    }


def check_permissions(example: Example, ctx: Context) -> None:
    perms = parser.parse(_document(example)).front_matter.permissions
    assert perms.read == ["agent://*", "scope:maml:read"]
    assert perms.write == ["agent://local"]
    assert perms.execute == ["agent://local", "scope:quantum:run"]


def check_entry_pattern(example: Example, ctx: Context) -> None:
    assert "".join(example.body.split()) == "".join(model._ENTRY.pattern.split())


def _valid_documents() -> list[str]:
    return [_document(e) for e in EXAMPLES if e.kind in ("maml", "maml-front-matter")]


def check_canonical_bytes(example: Example, ctx: Context) -> None:
    namespace: dict[str, Any] = {}
    exec(example.body, namespace)
    canonical_bytes = namespace["canonical_bytes"]
    documents = _valid_documents()
    documents += [signing.sign_document(d, ctx.keystore).signed_document for d in documents[:3]]
    documents += [
        HEAD + "signature:\n  value: x\n\tmore: y\n\ntitle: t\n---\n# body\nsignature: kept\n",
        HEAD + "signature:\n---\n",
        HEAD + "title: t\nsignature: {}\n---",
        HEAD + "signature:x\n---\n",
        "---\n---\n",
    ]
    for document in documents:
        for variant in (document, document.replace("\n", "\r\n"), document.replace("\n", "\r")):
            data = variant.encode("utf-8")
            assert canonical_bytes(data) == parser.canonical_bytes(data), variant


def check_context(example: Example, ctx: Context) -> None:
    assert example.body.rstrip("\n").encode("ascii") == mldsa.MAML_CONTEXT
    assert len(mldsa.MAML_CONTEXT) == 31  # "the 31 ASCII bytes"


def _block_layout(block: str) -> list[tuple[str, str]]:
    """(key, how the value is written) for each line of a signature block."""
    layout = []
    for line in block.strip("\n").splitlines()[1:]:
        match = re.fullmatch(r'  ([a-z_]+): (".*")', line)
        assert match is not None, f"not a double-quoted value: {line!r}"
        layout.append((match[1], "quoted"))
    return layout


def check_signature_block(example: Example, ctx: Context) -> None:
    signed = signing.sign_document(BY_ID["hello-input"].body, ctx.keystore).signed_document
    lines = signed.splitlines(keepends=True)
    start = lines.index("signature:\n")
    block = "".join(lines[start : start + 5])
    assert _block_layout(example.body) == _block_layout(block)
    assert example.body.splitlines()[0] == "signature:"
    assert parser.parse(signed).front_matter.signature is not None


def check_detached(example: Example, ctx: Context) -> None:
    detached = signing.parse_detached(example.body)
    assert detached.document_id == "urn:uuid:0b5c8a43-2f6e-4d1a-9c3b-7e8f9a0b1c2d"
    assert detached.block.digest == "sha256:" + _hello_sha256()
    made = signing.sign_detached(BY_ID["hello-input"].body, ctx.keystore)
    assert list(json.loads(example.body)) == list(made)
    assert made["digest"] == detached.block.digest


def _hello_sha256() -> str:
    return BY_ID["hello-sha256"].body.strip()


def check_worked_example(example: Example, ctx: Context) -> None:
    ctx.monkeypatch.setattr(tempfile, "tempdir", str(ctx.tmp_path))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(example.body, {})
    first, printed = out.getvalue().split("\n", 1)
    key_id, sha = first.split()
    assert re.fullmatch(r"[0-9a-f]{32}", key_id)
    assert sha == _hello_sha256()
    printed = printed.removesuffix("\n")  # print() adds one
    shown = BY_ID["hello-signed"].body
    assert re.sub(r'(key_id|value): ".*"', r"\1", printed) == re.sub(r'(key_id|value): ".*"', r"\1", shown)
    assert parser.canonical_bytes(printed) == BY_ID["hello-input"].body.encode()


def check_hello_input(example: Example, ctx: Context) -> None:
    data = example.body.encode("utf-8")
    assert len(data) == 121 and data.count(b"\n") == 9  # "121 bytes", "9 lines, each ending in LF"
    assert hashlib.sha256(data).hexdigest() == _hello_sha256()


def check_hello_signed(example: Example, ctx: Context) -> None:
    assert parser.canonical_bytes(example.body) == BY_ID["hello-input"].body.encode()
    block = parser.parse(example.body).front_matter.signature
    assert block is not None
    assert (block.algorithm, block.digest) == ("ML-DSA-65", "sha256:" + _hello_sha256())
    assert f'key_id: "{block.key_id}"' in BY_ID["signature-block"].body  # the same key id throughout
    assert re.fullmatch(r"[0-9a-f]{32}", block.key_id)


def check_hello_canonical(example: Example, ctx: Context) -> None:
    assert example.body.rstrip("\n") == BY_ID["hello-input"].body.replace("\n", "\\n")


def check_hello_sha256(example: Example, ctx: Context) -> None:
    assert re.fullmatch(r"[0-9a-f]{64}\n", example.body)
    assert BY_ID["signature-block"].body.count(_hello_sha256()) == 1


def check_independent_verifier(example: Example, ctx: Context) -> None:
    namespace: dict[str, Any] = {}
    exec(example.body, namespace)
    verify_maml = namespace["verify_maml"]
    signed = signing.sign_document(BY_ID["hello-input"].body, ctx.keystore)
    pem = ctx.keystore.export_public(signed.key_id)
    document = signed.signed_document.encode("utf-8")
    verify_maml(document, pem)
    verify_maml(document.replace(b"\n", b"\r\n"), pem)
    for old, new in ((b"Say hello.", b"Say hellO."), (b"type: prompt", b"type: prompX")):
        with pytest.raises(InvalidSignature):
            verify_maml(document.replace(old, new), pem)
    value = re.search(rb'value: "([^"]+)"', document)
    assert value is not None and len(value[1]) == 4412 and len(base64.b64decode(value[1])) == 3309


def check_indented(example: Example, ctx: Context) -> None:
    signed = signing.sign_document(example.body, ctx.keystore).signed_document
    parsed = parser.parse(signed)
    assert parsed.front_matter.signature is not None
    assert signing.inspect_signature(signed, ctx.keystore).valid
    front = signed.split("---\n")[1]
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(front)


# -- the tables of section 2 --------------------------------------------------------------------

REFUSED = [  # (example as written in the "Refused" table, a front matter line with it, the message)
    ("b: *x", "b: *x", "YAML aliases are not allowed"),
    ("a: &x 1", "a: &x 1", "YAML anchors are not allowed"),
    ("k: !!str 3", "k: !!str 3", "YAML tags are not allowed"),
    ("<<: {a: 1}", "<<: {a: 1}", "YAML merge keys (<<) are not allowed"),
    ("? [a]", "? [a]", "mapping keys must be strings"),
    ("1:", "1: x", "keys must be strings, not"),
    ("on:", "on: x", "keys must be strings, not"),
    ("null:", "null: x", "keys must be strings, not"),
    ("~:", "~: x", "keys must be strings, not"),
    ("n: 1234567890123456789", "n: 1234567890123456789", "a number may have at most 18 digits; quote it"),
    ("k: [[[[[[[[1]]]]]]]]", "k: [[[[[[[[1]]]]]]]]", "nesting deeper than"),
]


@pytest.mark.parametrize(("written", "line", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_table(written: str, line: str, message: str) -> None:
    assert f"`{written}`" in DOC
    assert message.split(" (")[0] in DOC
    with pytest.raises(InvalidDocument, match=re.escape(message)):
        parser.parse(HEAD + line + "\n---\n")


def test_depth_example_accepted() -> None:
    assert "`k: [[[[[[[1]]]]]]]` (top mapping plus 7 sequences) is accepted" in DOC
    parser.parse(HEAD + "k: [[[[[[[1]]]]]]]\n---\n")


SCALARS: list[tuple[str, object]] = [  # (plain scalar as written in section 2, its value)
    *((w, None) for w in ("~", "null", "Null", "NULL")),
    *((w, True) for w in ("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON")),
    *((w, False) for w in ("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF")),
    ("0", 0),
    ("+12", 12),
    ("-7", -7),
    ("2.0", 2.0),
    ("2.10", 2.1),
    ("1.5e+3", 1500.0),
    *(
        (w, w)
        for w in (
            "y",
            "n",
            "2025-10-18",
            "017",
            "00",
            "0x1A",
            "0b101",
            "0o17",
            "1_000",
            "1:30",
            "1:59:59",
            ".inf",
            "-.Inf",
            ".nan",
            "1e3",
            "1.0e3",
            "-.5",
        )
    ),
]


@pytest.mark.parametrize(("written", "value"), SCALARS, ids=[s[0] for s in SCALARS])
def test_scalars_table(written: str, value: object) -> None:
    assert f"`{written}`" in DOC
    extra = parser.parse(HEAD + f"k: {written}\n---\n").front_matter.model_extra
    assert extra is not None
    assert extra["k"] == value and type(extra["k"]) is type(value)


def test_empty_value_is_null() -> None:
    extra = parser.parse(HEAD + "k:\n---\n").front_matter.model_extra
    assert extra == {"k": None}


@pytest.mark.parametrize("written", ["1.0e+999", "-1.0e+999"])
def test_float_too_large_refused(written: str) -> None:
    assert "`1.0e+999`" in DOC
    with pytest.raises(InvalidDocument, match="too large"):
        parser.parse(HEAD + f"k: {written}\n---\n")
