"""Every fenced example in docs/ (but docs/maml.md, see tests/maml/test_docs_examples.py) is checked.

The examples are the fences (```` ``` ```` or `~~~`, indented up to three spaces) of each document.
The first word of a fence's info string is its kind; `key=value` words after it add to that, and
bare words are flags:

- `id=NAME` (required on every fence): the example is checked by `check_NAME` below, for what the
  surrounding text claims. A fence without one fails, so nothing in the documents is left unchecked.
- kinds, checked before the `check_NAME`: `maml` (`parser.parse` accepts it), `json` (it parses),
  `yaml` (`yaml.safe_load_all` reads it), `sh` (its commands split like a POSIX shell's; every
  variable it sets is a real setting, `MACROSLOW_<FIELD>` or a documented alias, and the settings
  validate; every `macroslow-mcp` command parses with the real CLI parser), `console` (each
  `$ macroslow-mcp ...` line parses with the CLI parser), `python` (it compiles; its `check_NAME`
  runs it), `text` (only its `check_NAME`).
- `untested` (a flag): an example that cannot run here (Kubernetes). Its section must say "untested
  example"; its check verifies what can be verified: it is well formed and names real settings,
  flags and endpoints.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import AliasChoices
from sqlalchemy.engine import make_url

from mcp_server import sealing
from mcp_server.auth.tokens import TokenAuthority
from mcp_server.cli import build_parser, main
from mcp_server.crypto import kem, mldsa
from mcp_server.crypto.keys import public_pem
from mcp_server.db import open_engine
from mcp_server.home import initialize, open_keys
from mcp_server.ledger import proofs
from mcp_server.ledger.checkpoint import open_checkpoint, parse_body
from mcp_server.ledger.receipts import Draft
from mcp_server.ledger.store import Ledger
from mcp_server.llm.client import backend_of
from mcp_server.maml import parser
from mcp_server.settings import Settings

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
# docs/maml.md has its own test (tests/maml/test_docs_examples.py); every other document is here.
DOCS = sorted(p for p in DOCS_DIR.glob("*.md") if p.name != "maml.md")
KINDS = {"text", "console", "sh", "json", "yaml", "maml", "python"}
FLAGS = {"untested"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass
class Example:
    doc: str  # file name in docs/
    kind: str
    attrs: dict[str, str]
    flags: set[str]
    body: str
    line: int  # of the opening fence
    section: str  # the document's text from the heading above the fence to the fence
    id: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.attrs.get("id")

    def __str__(self) -> str:
        return f"docs/{self.doc}:{self.line} ({self.kind}{' ' + self.id if self.id else ''})"


def _examples(path: Path) -> list[Example]:
    found: list[Example] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    heading = 0
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            if lines[index].startswith("#"):
                heading = index
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((i for i in range(index + 1, len(lines)) if closing.match(lines[i])), None)
        assert end is not None, f"docs/{path.name}:{index + 1}: the fence is never closed"
        kind, *words = opening["info"].split() or [""]
        attrs = dict(w.split("=", 1) for w in words if "=" in w)
        flags = {w for w in words if "=" not in w}
        body = "".join(re.sub(rf"^ {{0,{indent}}}", "", line) + "\n" for line in lines[index + 1 : end])
        section = "\n".join(lines[heading:index])
        found.append(Example(path.name, kind, attrs, flags, body, index + 1, section))
        index = end + 1
    return found


EXAMPLES = [e for path in DOCS for e in _examples(path)]
BY_ID = {e.id: e for e in EXAMPLES if e.id}


@dataclass
class Context:
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]


# -- settings, shell scripts and the command line -----------------------------------------------


def _env_names() -> dict[str, str]:
    """Every environment variable Settings reads, with the field it sets."""
    names: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [f"MACROSLOW_{name.upper()}"]
        for choice in choices:
            assert isinstance(choice, str)
            names[choice.upper()] = name
    return names


ENV_NAMES = _env_names()


def _clean_environment(ctx: Context) -> None:
    """No setting from the test's own environment or a stray .env file."""
    for name in list(os.environ):
        if name.startswith("MACROSLOW_") or name.upper() in ENV_NAMES:
            ctx.monkeypatch.delenv(name)
    ctx.monkeypatch.chdir(ctx.tmp_path)


def _settings(env: dict[str, str], ctx: Context) -> Settings:
    """The real Settings from exactly `env` (plus a home under tmp_path unless `env` names one)."""
    _clean_environment(ctx)
    ctx.monkeypatch.setenv("MACROSLOW_HOME", str(ctx.tmp_path / "home"))
    for name, value in env.items():
        assert name in ENV_NAMES, f"{name} is not a setting (see mcp_server/settings.py)"
        ctx.monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def _cli_args(argv: list[str]) -> Any:
    """`macroslow-mcp ARGV` as the real CLI parser reads it (nothing is run)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"the CLI refuses `macroslow-mcp {shlex.join(argv)}` (exit {exc.code})")


def _run(ctx: Context, *argv: str) -> tuple[int, str, str]:
    """Run the real CLI in-process: exit code, stdout, stderr."""
    ctx.capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = ctx.capsys.readouterr()
    return int(info.value.code or 0), out, err


@dataclass
class Shell:
    env: dict[str, str]  # every variable the script sets (exported or for one command)
    commands: list[list[str]]  # the arguments of each `macroslow-mcp` command


ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _shell(script: str) -> Shell:
    """Split a POSIX shell example into its commands: line continuations joined, comments dropped,
    quoted values spanning lines kept whole. Only `export NAME=...`, `NAME=... macroslow-mcp ...` and
    `macroslow-mcp ...` are expected in these examples."""
    words_of: list[list[str]] = []
    pending = ""
    for line in script.replace("\\\n", " ").splitlines():
        pending += line + "\n"
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if words:
            words_of.append(words)
        pending = ""
    assert not pending.strip(), f"unclosed quote in: {pending!r}"
    shell = Shell({}, [])
    for words in words_of:
        if words[0] == "export":
            assignments, rest = words[1:], []
        else:
            count = next((i for i, w in enumerate(words) if not ASSIGNMENT.match(w)), len(words))
            assignments, rest = words[:count], words[count:]
        for assignment in assignments:
            name, value = assignment.split("=", 1)
            assert name in ENV_NAMES, f"{name} is not a setting (see mcp_server/settings.py)"
            shell.env[name] = value
        if rest:
            assert rest[0] == "macroslow-mcp", f"not a macroslow-mcp command: {shlex.join(rest)}"
            shell.commands.append(rest[1:])
    return shell


# -- the tests -----------------------------------------------------------------------------------


def test_the_documents_are_covered() -> None:
    names = {p.name for p in DOCS}
    assert {"sealing.md", "receipts.md", "security.md", "deploy.md", "quantum.md", "llm.md"} <= names
    assert {e.doc for e in EXAMPLES} >= {"sealing.md", "receipts.md", "security.md", "deploy.md", "llm.md"}
    assert len(BY_ID) == sum(1 for e in EXAMPLES if e.id), "an id is used twice"


def test_every_check_is_used() -> None:
    checks = {name.removeprefix("check_") for name in globals() if name.startswith("check_")}
    assert checks == {i.replace("-", "_") for i in BY_ID}, "a check_... without its example, or the reverse"


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example(
    example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.kind in KINDS, f"{example}: unknown kind {example.kind!r}; tag the fence (see this test)"
    assert example.flags <= FLAGS, f"{example}: unknown flags {example.flags - FLAGS}"
    assert example.id is not None, f"{example}: the fence needs an id=... naming its check"
    ctx = Context(tmp_path, monkeypatch, capsys)
    if "untested" in example.flags:
        assert "untested example" in example.section, f"{example}: its section must say 'untested example'"
    if example.kind == "maml":
        parser.parse(example.body)
    elif example.kind == "json":
        json.loads(example.body)
    elif example.kind == "yaml":
        list(yaml.safe_load_all(example.body))
    elif example.kind == "python":
        compile(example.body, str(example), "exec")
    elif example.kind == "sh":
        shell = _shell(example.body)
        _settings(shell.env, ctx)
        for argv in shell.commands:
            _cli_args(argv)
    elif example.kind == "console":
        for line in example.body.splitlines():
            if line.startswith("$ "):
                argv = shlex.split(line[2:])
                assert argv[0] == "macroslow-mcp", line
                _cli_args(argv[1:])
    name = f"check_{example.id.replace('-', '_')}"
    check: Callable[[Example, Context], None] | None = globals().get(name)
    assert check is not None, f"{example}: no {name} in this test"
    check(example, ctx)


# -- docs/sealing.md -----------------------------------------------------------------------------


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start) : text.index(end, text.index(start))]


def check_hybrid_kdf(example: Example, ctx: Context) -> None:
    """Recompute the KEK exactly as the fence writes it, from the two shared secrets, and compare it
    with what the code's decapsulation derives."""
    body = example.body
    label = re.search(r'info = "([^"]+)"', body)
    assert label is not None and label[1].encode() == kem.LABEL
    ikm_terms = _between(body, "IKM  =", ",\n").split("||")
    info_terms = _between(body, f'"{label[1]}"', ",").split("||")
    lengths = re.search(r"pk_M raw (\d+) bytes, pk_X raw (\d+) bytes", body)
    assert lengths is not None
    assert (int(lengths[1]), int(lengths[2])) == (kem.MLKEM_PUBLIC_BYTES, kem.X25519_BYTES)
    length = re.search(r"L    = (\d+)\)", body)
    assert length is not None
    assert "salt = (none: 32 zero bytes)" in body

    private = kem.generate()
    public = private.public_key()
    ss_m, ct_m = public.mlkem.encapsulate()  # step 1 of the text
    ephemeral = X25519PrivateKey.generate()  # step 2
    ct_x = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ss_x = ephemeral.exchange(public.x25519)
    assert (len(ss_m), len(ct_m), len(ct_x)) == (32, 1088, 32)  # as steps 1 and 2 say
    values = {
        "ss_M": ss_m,
        "ss_X": ss_x,
        "ct_M": ct_m,
        "ct_X": ct_x,
        "pk_M": public.mlkem.public_bytes_raw(),
        "pk_X": public.x25519.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    }
    assert len(values["pk_M"]) == int(lengths[1]) and len(values["pk_X"]) == int(lengths[2])
    ikm = b"".join(values[t.strip()] for t in ikm_terms)
    info = label[1].encode() + b"".join(values[t.strip()] for t in info_terms if t.strip())
    kek = HKDF(algorithm=hashes.SHA256(), length=int(length[1]), salt=bytes(32), info=info).derive(ikm)
    assert kek == kem.decapsulate(private, ct_m, ct_x)


def _aad_formula(steps: str, document_id: str, key_ids: list[str]) -> bytes:
    """The AAD as the "Sealing" fence writes it, for this document id and these recipients."""
    head = steps[: steps.index("CEK, nonce")]
    text = "".join(re.findall(r'"([^"]*)"', head)).replace("\\n", "\n")
    text = text.replace("<id>", document_id).replace("<key_id 1> <key_id 2> ...", " ".join(key_ids))
    return text.encode("ascii")


def check_seal_steps(example: Example, ctx: Context) -> None:
    """Open a real seal for two recipients by following the fence step by step (KEKs from the code's
    decapsulation, checked against the KDF fence above), with AES-GCM directly."""
    body = example.body
    words = " ".join(body.split())
    assert "CEK, nonce = 32 random bytes, 12 random bytes" in words
    assert 'AES-256-GCM(KEK_i, nonce = 12 zero bytes, CEK, AAD || "recipient: <key_id i>\\n")' in words
    assert "(48 bytes with its tag;" in words
    assert "ciphertext = AES-256-GCM(CEK, nonce, document bytes, AAD) (with its 16-byte tag)" in words
    document = BY_ID["note"].body.encode()
    alice, bob = kem.generate(), kem.generate()
    recipients = [alice.public_key(), bob.public_key()]
    sealed = sealing.parse_sealed(sealing.seal(document, recipients))
    aad = _aad_formula(body, sealed.document_id, [r.key_id for r in recipients])
    assert aad == sealing.associated_data(sealed.document_id, sealed.recipient_ids)
    assert sealed.recipient_ids == [r.key_id for r in recipients]  # header order
    assert len(sealed.nonce) == 12
    keys = set()
    for private, slot in zip((alice, bob), sealed.recipients, strict=True):
        kek = kem.decapsulate(private, slot.mlkem_ciphertext, slot.x25519_ephemeral)
        assert len(slot.wrapped_key) == 48
        recipient = f"recipient: {slot.key_id}\n".encode()
        cek = AESGCM(kek).decrypt(bytes(12), slot.wrapped_key, aad + recipient)
        assert len(cek) == 32
        keys.add(cek)
    [cek] = keys  # one content key, wrapped for each recipient
    assert len(sealed.ciphertext) == len(document) + 16
    assert AESGCM(cek).decrypt(sealed.nonce, sealed.ciphertext, aad) == document


def _check_value(placeholder: str, value: str, document: bytes) -> None:
    """A header value against the placeholder the format fence writes for it."""
    if placeholder.startswith("urn:uuid:"):
        assert "lowercase canonical; must equal the sealed document's id" in placeholder
        assert value == parser.parse(document).id
        assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value)
    elif "hex digits" in placeholder:
        digits = re.fullmatch(r"(\d+) hex digits", placeholder)
        assert digits is not None, placeholder
        assert re.fullmatch(rf"[0-9a-f]{{{digits[1]}}}", value), value
    elif placeholder.startswith("base64"):
        raw = base64.b64decode(value, validate=True)
        assert base64.b64encode(raw).decode() == value  # standard alphabet, with padding
        size = re.search(r"(\d+) bytes", placeholder)
        if size is not None:
            assert len(raw) == int(size[1]), placeholder
        else:
            assert placeholder == "base64 of the ciphertext with its tag, on one line"
            assert len(raw) == len(document) + sealing.TAG_BYTES
    else:
        pytest.fail(f"no check for the placeholder <{placeholder}>")


def _matches_format(sealed_text: str, document: bytes) -> None:
    """`sealed_text` is written exactly as the "text format" fence says, for `document`."""
    template = BY_ID["sealed-format"].body.rstrip("\n").split("\n")
    more = next(i for i, line in enumerate(template) if line.lstrip().startswith("... ("))
    count = re.search(r"\((\d+) to (\d+) recipients, distinct key ids\)", template[more])
    assert count is not None and (int(count[1]), int(count[2])) == (1, sealing.MAX_RECIPIENTS)
    block = template[more - 4 : more]
    assert sealed_text.isascii() and "\r" not in sealed_text
    assert sealed_text.endswith("\n") and not sealed_text.endswith("\n\n")  # one final newline
    lines = sealed_text[:-1].split("\n")
    fixed = len(template) - len(block) - 1
    recipients, rest = divmod(len(lines) - fixed, len(block))
    assert rest == 0 and recipients >= 1, "not the documented number of lines"
    expected = template[: more - 4] + block * recipients + template[more + 1 :]
    for written, line in zip(expected, lines, strict=True):
        quoted = re.fullmatch(r'(.*)"<(.*)>"', written)
        if quoted is not None:
            assert line.startswith(f'{quoted[1]}"') and line.endswith('"'), (written, line)
            _check_value(quoted[2], line[len(quoted[1]) + 1 : -1], document)
        elif written.startswith("<") and written.endswith(">"):
            _check_value(written[1:-1], line, document)
        else:
            assert line == written
    keys = [line for line in lines if line.startswith("  - key_id: ")]
    assert len(set(keys)) == len(keys)


def check_sealed_format(example: Example, ctx: Context) -> None:
    document = BY_ID["note"].body.encode()
    for count in (1, 3):
        text = sealing.seal(document, [kem.generate().public_key() for _ in range(count)])
        _matches_format(text, document)
    limit = sealing.max_sealed_bytes(Settings.model_fields["max_document_bytes"].default)
    assert limit == 4 * ((2**20 + 16 + 2) // 3) + 1 + 1024 + 16 * 2048  # the text's size cap


def check_note(example: Example, ctx: Context) -> None:
    # "The ciphertext is 243 bytes: the 227-byte document plus the 16-byte tag."
    size = len(example.body.encode())
    assert f"the {size}-byte document plus the 16-byte tag" in _doc("sealing.md")
    assert parser.parse(example.body).front_matter.signature is None  # "unsigned", as `open` reports


def _doc(name: str) -> str:
    """The document's text, white space runs as one space (so re-wrapping the prose changes nothing)."""
    return " ".join((DOCS_DIR / name).read_text(encoding="utf-8").split())


def _session(body: str) -> list[tuple[list[str], list[str]]]:
    """A console example: each `$ ` command with the lines it prints."""
    steps: list[tuple[list[str], list[str]]] = []
    for line in body.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            steps.append((shlex.split(line[2:])[1:], []))
        else:
            steps[-1][1].append(line)
    return steps


def check_seal_session(example: Example, ctx: Context) -> None:
    """Run the session's commands through the real CLI in an empty home; each prints what is shown,
    but for the new key's id."""
    _clean_environment(ctx)
    ctx.monkeypatch.setenv("MACROSLOW_HOME", str(ctx.tmp_path / "home"))
    note = BY_ID["note"].body
    (ctx.tmp_path / "note.maml.md").write_text(note, encoding="utf-8")
    steps = _session(example.body)
    shown_ids = set(re.findall(r"\b[0-9a-f]{32}\b", example.body))
    assert len(shown_ids) == 1
    [shown_id] = shown_ids
    real_id = shown_id
    for argv, shown in steps:
        argv = [a.replace(shown_id, real_id) for a in argv]
        code, out, err = _run(ctx, *argv)
        assert code == 0, err
        if argv[:2] == ["keys", "generate"]:
            real_id = out.splitlines()[-1]
        assert out.splitlines() == [line.replace(shown_id, real_id) for line in shown], argv
    assert [argv[0] for argv, _ in steps] == ["keys", "seal"]
    sealed = (ctx.tmp_path / "note.maml.md.sealed").read_text(encoding="ascii")
    _matches_format(sealed, note.encode())
    # "`macroslow-mcp open note.maml.md.sealed` prints the document and, on stderr, `opened ... with
    # recipient key 2159b8...: urn:uuid:3b0c1d2e-..., unsigned`"
    code, out, err = _run(ctx, "open", "note.maml.md.sealed")
    assert code == 0 and out == note
    document_id = parser.parse(note).id
    assert err == f"opened note.maml.md.sealed with recipient key {real_id}: {document_id}, unsigned\n"
    shown_err = re.search(
        r"`opened \.\.\. with recipient key ([0-9a-f]+)\.\.\.: (urn:uuid:[0-9a-f-]+)\.\.\., (\w+)`",
        _doc("sealing.md"),
    )
    assert shown_err is not None
    assert shown_id.startswith(shown_err[1]) and document_id.startswith(shown_err[2])
    assert shown_err[3] == "unsigned"


def check_sealed_note(example: Example, ctx: Context) -> None:
    """The sealed output shown is what `seal` writes for the note, for the session's key."""
    note = BY_ID["note"].body.encode()
    _matches_format(example.body, note)
    sealed = sealing.parse_sealed(example.body)
    assert sealed.document_id == parser.parse(note).id
    session_ids = set(re.findall(r"\b[0-9a-f]{32}\b", BY_ID["seal-session"].body))
    assert sealed.recipient_ids == sorted(session_ids)
    # "The ciphertext is 243 bytes: the 227-byte document plus the 16-byte tag."
    assert f"The ciphertext is {len(sealed.ciphertext)} bytes" in _doc("sealing.md")


def check_sealed_note_aad(example: Example, ctx: Context) -> None:
    sealed = sealing.parse_sealed(BY_ID["sealed-note"].body)
    aad = example.body.encode("ascii")
    assert aad == sealing.associated_data(sealed.document_id, sealed.recipient_ids)
    assert aad == _aad_formula(BY_ID["seal-steps"].body, sealed.document_id, sealed.recipient_ids)


# -- docs/receipts.md ----------------------------------------------------------------------------

ORIGIN = re.compile(
    r"macroslow-mcp/receipts/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"  # uuid4
)
STD_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _draft(i: int) -> Draft:
    return Draft(
        principal=f"agent://user{i}",
        issuer="local",
        token_id=f"jti-{i}",
        scopes="maml:read",
        tool="verify_maml",
        action="read",
        decision="allowed",
        reason=None,
        outcome="ok",
        arguments_digest="sha256:" + "cd" * 32,
        result_digest="sha256:" + "ef" * 32,
        duration_us=1000 + i,
    )


def check_checkpoint_note(example: Example, ctx: Context) -> None:
    """A real ledger's checkpoint, exported with `receipts export --checkpoint`, has the example's
    lines: origin, size, base64 root, a blank line, `— <key name> <base64(key id || signature)>`."""
    _clean_environment(ctx)
    home = ctx.tmp_path / "home"
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    initialize(settings, example=False)
    engine = open_engine(settings.database, durable=True)
    try:
        ledger = Ledger(engine, open_keys(settings))
        for i in range(3):
            ledger.append(_draft(i))
        stored = ledger.checkpoint()
        origin = ledger.origin
    finally:
        engine.dispose()
    assert stored is not None
    code, _, err = _run(ctx, "--home", str(home), "receipts", "export", "--checkpoint", "cp.note")
    assert code == 0, err
    real = (ctx.tmp_path / "cp.note").read_text(encoding="utf-8")
    assert real == stored.note

    shown = example.body.split("\n")
    made = real.split("\n")
    assert len(shown) == len(made) == 6 and shown[3] == made[3] == "" and shown[5] == made[5] == ""
    for lines in (shown, made):  # origin, size, root, blank, signature line
        assert ORIGIN.fullmatch(lines[0]), lines[0]
        assert re.fullmatch(r"0|[1-9][0-9]*", lines[1])
        assert STD_BASE64.fullmatch(lines[2]) and len(base64.b64decode(lines[2], validate=True)) == 32
        assert parse_body("\n".join(lines[:3]) + "\n").origin == lines[0]
        dash, name, signature = lines[4].split(" ")
        assert dash == "\u2014" and name == lines[0]  # key name = the origin
    assert made[:3] == [origin, "3", base64.b64encode(stored.root).decode()]
    signature = shown[4].split(" ")[2]
    assert signature.endswith("...") and STD_BASE64.fullmatch(signature.removesuffix("..."))  # elided

    public = open_keys(settings).public_key(stored.key_id)
    assert public is not None
    assert open_checkpoint(real, origin, public).size == 3
    blob = base64.b64decode(made[4].split(" ")[2], validate=True)
    # The C2SP ML-DSA-44 signature: key ID type 0x06 over the 1312-byte key, then u64 time, signature.
    assert len(public.public_bytes_raw()) == 1312
    assert blob[:4] == hashlib.sha256(origin.encode() + b"\n\x06" + public.public_bytes_raw()).digest()[:4]
    assert len(blob) == 4 + 8 + 2420


@dataclass
class ProofLog:
    """A real ledger of three receipts (`_draft(0..2)`) under MACROSLOW_HOME, signed at size 3."""

    origin: str
    ids: list[str]
    key_id: str


def _proof_log(ctx: Context) -> ProofLog:
    _clean_environment(ctx)  # and the working directory is tmp_path
    home = ctx.tmp_path / "home"
    ctx.monkeypatch.setenv("MACROSLOW_HOME", str(home))
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    initialize(settings, example=False)
    engine = open_engine(settings.database, durable=True)
    try:
        ledger = Ledger(engine, open_keys(settings))
        ids = [ledger.append(_draft(i)).id for i in range(3)]
        stored = ledger.checkpoint()
        origin = ledger.origin
    finally:
        engine.dispose()
    assert stored is not None and stored.size == 3
    return ProofLog(origin, ids, stored.key_id)


def _prove(ctx: Context, receipt_id: str, path: str) -> str:
    code, _, err = _run(ctx, "receipts", "prove", receipt_id, "--tlog-proof", "-o", path)
    assert code == 0, err
    return (ctx.tmp_path / path).read_text(encoding="utf-8")


def _proof_layout(lines: list[str]) -> None:
    """The lines of a tlog-proof of entry 1 of 3: the layout the "tlog-proof-file" fence shows."""
    assert len(lines) == 12
    assert lines[0] == proofs.MAGIC and lines[1].startswith("extra ") and lines[2] == "index 1"
    for line in (*lines[3:5], lines[8]):  # the two hashes of the path, the checkpoint's root
        assert STD_BASE64.fullmatch(line) and len(base64.b64decode(line, validate=True)) == 32
    assert lines[5] == lines[9] == lines[11] == ""  # before the checkpoint, in it, the final newline
    assert ORIGIN.fullmatch(lines[6]) and lines[7] == "3"
    dash, name, _ = lines[10].split(" ")
    assert dash == "\u2014" and name == lines[6]  # key name = the origin


def check_tlog_proof_file(example: Example, ctx: Context) -> None:
    """`receipts prove ID --tlog-proof` writes the lines shown: magic, extra (the receipt's leaf
    bytes), index, the RFC 9162 path, an empty line, the checkpoint note verbatim."""
    log = _proof_log(ctx)
    real = _prove(ctx, log.ids[1], "r.tlog-proof")
    shown, made = example.body.split("\n"), real.split("\n")
    _proof_layout(made)
    _proof_layout(shown)
    signature = shown[10].split(" ")[2]
    assert signature.endswith("...") and STD_BASE64.fullmatch(signature.removesuffix("..."))  # elided
    # The shown extra is the start of a receipt's canonical JSON, as the real one is: elided too.
    shown_extra = shown[1].removeprefix("extra ").removesuffix("...")
    assert shown[1].endswith("...") and len(shown_extra) % 4 == 0
    real_extra = base64.b64decode(made[1].removeprefix("extra "), validate=True)
    assert real_extra.startswith(base64.b64decode(shown_extra, validate=True))
    assert shown[6] == BY_ID["checkpoint-note"].body.split("\n")[0]  # the same log as above
    # The real proof is the ledger's own proof, and checks out with the log's key.
    proof = proofs.parse_proof(real)
    code, out, _ = _run(ctx, "receipts", "prove", log.ids[1])
    proved = json.loads(out)
    assert code == 0 and [h.hex() for h in proof.hashes] == proved["proof"]
    assert proof.checkpoint_note == proved["checkpoint"]
    public = open_keys(Settings(_env_file=None)).public_key(log.key_id)  # type: ignore[call-arg]
    assert public is not None
    checked = proofs.check_proof(real, public, log.origin)
    assert checked.receipt["id"] == log.ids[1] and checked.receipt["seq"] == checked.index == 1
    assert json.loads(real_extra) == checked.receipt


def check_tlog_proof_session(example: Example, ctx: Context) -> None:
    """Run the session through the real CLI: each command prints what is shown, with the real
    receipt id, origin and key id in place of the shown ones."""
    log = _proof_log(ctx)
    steps = _session(example.body)
    [shown_origin] = set(ORIGIN.findall(example.body))
    [shown_key] = set(re.findall(r"\b[0-9a-f]{32}\b", example.body))
    shown_receipt = steps[0][0][2]
    swaps = {shown_origin: log.origin, shown_receipt: log.ids[1], shown_key: log.key_id}

    def real(text: str) -> str:
        for shown, made in swaps.items():
            text = text.replace(shown, made)
        return text

    for argv, printed in steps:
        code, out, err = _run(ctx, *map(real, argv))
        assert code == 0, err
        assert out.splitlines() == [real(line) for line in printed], argv
    commands = [" ".join(argv[:2]) for argv, _ in steps]
    assert commands == ["receipts prove", "receipts check-proof", "keys export", "receipts check-proof"]
    assert "--key" not in steps[1][0] and "--key" in steps[3][0]  # the trust store, then the PEM


SCRIPT_FAILS = "proof REFUSED: "


def _tampered(real: str, other_leaf: bytes) -> dict[str, str]:
    """Proofs that must be refused: each changes one thing in a real proof of entry 1 of 3."""

    def flip(line: str, at: int) -> str:
        raw = bytearray(base64.b64decode(line, validate=True))
        raw[at] ^= 0x01
        return base64.b64encode(bytes(raw)).decode()

    def edit(number: int, line: str) -> str:
        lines = real.split("\n")
        lines[number] = line
        return "\n".join(lines)

    lines = real.split("\n")
    receipt = json.loads(base64.b64decode(lines[1].removeprefix("extra ")))
    forged = json.dumps({**receipt, "principal": "agent://mallory"}, sort_keys=True, separators=(",", ":"))
    dash, name, blob = lines[10].split(" ")
    return {
        "receipt": edit(1, "extra " + base64.b64encode(forged.encode()).decode()),
        "another receipt": edit(1, "extra " + base64.b64encode(other_leaf).decode()),
        "index": edit(2, "index 0"),
        "index out of the tree": edit(2, "index 3"),
        "hash": edit(3, flip(lines[3], 7)),
        "hash left out": "\n".join(lines[:4] + lines[5:]),
        "signature": edit(10, f"{dash} {name} {flip(blob, 100)}"),
        "tree size": edit(7, "2"),
        "no extra": "\n".join(lines[:1] + lines[2:]),
        "not a proof": real.replace(proofs.MAGIC, "c2sp.org/tlog-proof@v2"),
    }


def check_check_tlog_proof_script(example: Example, ctx: Context) -> None:
    """The script imports only the standard library and cryptography, accepts a real proof from a
    real ledger with the key `keys export` writes, and refuses every tampered one (as the CLI does)."""
    imported = set()
    for node in ast.walk(ast.parse(example.body)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None and node.level == 0
            imported.add(node.module.split(".")[0])
    assert "cryptography" in imported and imported - {"cryptography"} <= set(sys.stdlib_module_names)
    assert "check_tlog_proof.py receipt.tlog-proof log.pub.pem" in _doc("receipts.md")

    log = _proof_log(ctx)
    real = _prove(ctx, log.ids[1], "receipt.tlog-proof")
    code, _, err = _run(ctx, "keys", "export", log.key_id, "-o", "log.pub.pem")
    assert code == 0, err
    script = ctx.tmp_path / "check_tlog_proof.py"
    script.write_text(example.body, encoding="utf-8")

    def run_script(proof: str, key: str = "log.pub.pem") -> subprocess.CompletedProcess[str]:
        (ctx.tmp_path / "t.tlog-proof").write_text(proof, encoding="utf-8")
        return subprocess.run(
            [sys.executable, "-I", str(script), "t.tlog-proof", key],
            cwd=ctx.tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    accepted = run_script(real)
    assert accepted.returncode == 0, accepted.stderr
    first, _, receipt = accepted.stdout.partition("\n")
    assert first == f"proof ok: receipt 1 of 3 in {log.origin}"
    assert json.loads(receipt)["id"] == log.ids[1]

    other_leaf = base64.b64decode(_prove(ctx, log.ids[2], "other.tlog-proof").split("\n")[1][6:])
    for what, proof in _tampered(real, other_leaf).items():
        refused = run_script(proof)
        assert refused.returncode == 1 and refused.stderr.startswith(SCRIPT_FAILS), (what, refused)
        code, _, err = _run(ctx, "receipts", "check-proof", "t.tlog-proof", "--key", "log.pub.pem")
        assert code == 1 and err.startswith("macroslow-mcp: signature_invalid: "), (what, err)

    other = ctx.tmp_path / "other.pub.pem"
    other.write_bytes(public_pem(mldsa.generate().public_key()))
    refused = run_script(real, str(other))
    assert refused.returncode == 1 and refused.stderr.startswith(SCRIPT_FAILS), refused
    code, _, err = _run(ctx, "receipts", "check-proof", "receipt.tlog-proof", "--key", str(other))
    assert code == 1 and "no signature by" in err


# -- docs/security.md ----------------------------------------------------------------------------


def check_witness_policy(example: Example, ctx: Context) -> None:
    """The policy shown (vkeys elided) is a valid c2sp.org/tlog-policy once each elided vkey is a real
    one of the same key name; the parsed policy has the log, two witnesses with their URLs, and a
    quorum of both."""
    from mcp_server.crypto import mldsa
    from mcp_server.witness import cosignature, policy

    def real(token: str) -> str:
        name, key_id, material = token.split("+")
        assert re.fullmatch(r"[0-9a-f]{8}", key_id) and material == "Bh..."  # the shown form
        return cosignature.vkey(name, mldsa.generate(mldsa.Algorithm.ML_DSA_44).public_key())

    lines = []
    for line in example.body.splitlines():
        words = line.split(" ")
        at = 1 if words[0] == "log" else 2 if words[0] == "witness" else None
        if at is not None:
            words[at] = real(words[at])
        lines.append(" ".join(words))
    parsed = policy.parse("\n".join(lines) + "\n")
    [log] = parsed.logs
    assert log.origin == BY_ID["checkpoint-note"].body.split("\n")[0]  # the log shown above
    assert [(w.name, w.key_name, w.url) for w in parsed.witnesses] == [
        ("w1", "witness.example/w1", "https://w1.example/"),
        ("w2", "witness.example/w2", "https://w2.example/"),
    ]
    assert parsed.quorum == "both"
    assert parsed.satisfied({"w1", "w2"}) and not parsed.satisfied({"w1"})


def check_entra_id_env(example: Example, ctx: Context) -> None:
    shell = _shell(example.body)
    settings = _settings(shell.env, ctx)
    assert settings.resource_url == "https://mcp.example.com/mcp"
    assert settings.expected_audience == "api://macroslow"  # "that URI is the audience"
    assert settings.trust_local_issuer is False
    [issuer] = settings.issuers
    assert issuer.issuer == "https://login.microsoftonline.com/TID/v2.0"
    assert issuer.jwks_url == "https://login.microsoftonline.com/TID/discovery/v2.0/keys"
    assert issuer.algorithms == ["RS256"]
    assert (issuer.tenant_id, issuer.roles_as_scopes) == ("TID", True)
    authority = TokenAuthority.from_settings(settings)  # the check the server makes at start-up
    assert list(authority.issuers) == [issuer.issuer]
    assert authority.issuers[issuer.issuer].audiences == ["api://macroslow"]
    [argv] = shell.commands
    args = _cli_args(argv)
    assert (args.command, args.transport, args.host) == ("serve", "streamable-http", "0.0.0.0")


def check_oidc_issuers(example: Example, ctx: Context) -> None:
    settings = _settings({"MACROSLOW_ISSUERS": example.body, "MACROSLOW_TRUST_LOCAL_ISSUER": "false"}, ctx)
    [issuer] = settings.issuers
    assert issuer.issuer == "https://idp.example.com/"
    assert issuer.jwks_url == "https://idp.example.com/.well-known/jwks.json"
    assert issuer.algorithms == ["RS256", "ES256"]
    authority = TokenAuthority.from_settings(settings)
    assert authority.issuers[issuer.issuer].algorithms == {"RS256", "ES256"}


# -- docs/deploy.md ------------------------------------------------------------------------------


def check_workers_command(example: Example, ctx: Context) -> None:
    shell = _shell(example.body)
    settings = _settings(shell.env, ctx)
    assert settings.database_url is not None
    assert make_url(settings.database_url).get_dialect().name == "postgresql"  # psycopg is installed
    [argv] = shell.commands
    args = _cli_args(argv)
    assert (args.command, args.transport, args.workers, args.port) == ("serve", "streamable-http", 4, 8000)
    assert args.host == "0.0.0.0"


def check_kubernetes(example: Example, ctx: Context) -> None:
    """Cannot run here: the manifests are well formed, set only real settings (valid together), and
    the container's arguments, ports, probes and mounts agree with the CLI and with each other."""
    documents = {d["kind"]: d for d in yaml.safe_load_all(example.body)}
    assert set(documents) == {"Secret", "Deployment", "Service"}
    secret, deployment, service = documents["Secret"], documents["Deployment"], documents["Service"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = dict(secret["stringData"])
    env.update({item["name"]: item["value"] for item in container["env"]})
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == [secret["metadata"]["name"]]
    unknown = set(env) - set(ENV_NAMES)
    assert not unknown, f"not settings: {unknown}"
    settings = _settings(env, ctx)
    assert settings.database_url is not None
    assert make_url(settings.database_url).get_dialect().name == "postgresql"
    assert settings.log_format == "json" and settings.key_passphrase is not None

    args = _cli_args([str(a) for a in container["args"]])  # the image's entry point is macroslow-mcp
    assert (args.command, args.transport, args.host) == ("serve", "streamable-http", "0.0.0.0")
    [port] = [p["containerPort"] for p in container["ports"]]
    assert args.port == port
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": port,
    }  # mcp_server/http_app.py
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert service["spec"]["ports"][0]["targetPort"] == port
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert str(settings.keys_path) in mounts and str(settings.trust_path) in mounts
    assert "secret" in volumes[mounts[str(settings.keys_path)]]  # private keys from a Secret
    assert volumes[mounts[str(settings.keys_path)]]["secret"]["defaultMode"] == 0o400  # no group/other access


# -- docs/llm.md ---------------------------------------------------------------------------------


def check_azure_openai_env(example: Example, ctx: Context) -> None:
    shell = _shell(example.body)
    assert not shell.commands
    settings = _settings(shell.env, ctx)
    backend = backend_of(settings)
    assert backend.provider == "azure"
    assert backend.endpoint == "https://<resource>.openai.azure.com/"
    assert backend.default_model == "<deployment>"
    assert settings.azure_openai_api_key is None  # "leave every key unset": Entra ID is used
    assert settings.azure_openai_api_version == "2024-10-21"
    # "# or OPENAI_API_VERSION": the other name for the same setting
    other = re.search(r"MACROSLOW_AZURE_OPENAI_API_VERSION=(\S+) +# or (\w+)", example.body)
    assert other is not None
    env = {k: v for k, v in shell.env.items() if k != "MACROSLOW_AZURE_OPENAI_API_VERSION"}
    assert other[1] == settings.azure_openai_api_version
    alternative = "2099-01-01"  # not the default, so only the other name can have set it
    assert _settings({**env, other[2]: alternative}, ctx).azure_openai_api_version == alternative
