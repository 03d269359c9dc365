"""The MAML rules the prompts teach, as docs/maml.md states them and the parser enforces them.

Every number comes from the code (the parser's constants and this server's settings), so the text a
model is taught cannot drift from what `validate_maml` accepts; tests/prompts check that a document
written to these rules, and the example, validate.
"""

from __future__ import annotations

from mcp_server.home import example_workflow
from mcp_server.maml import parser, strict_yaml
from mcp_server.maml.model import SECTION_NAMES, DocumentType
from mcp_server.quantum.circuits import CIRCUIT_LANGUAGES
from mcp_server.settings import Settings


def example() -> str:
    """The bundled example workflow (a GHZ circuit), unsigned."""
    return example_workflow()


def _listing(names: object) -> str:
    return ", ".join(f"`{n}`" for n in names)  # type: ignore[attr-defined]


def rules(settings: Settings) -> str:
    """The format's rules as Markdown, with this server's limits."""
    types = _listing(t.value for t in DocumentType)
    sections = _listing(f"## {s}" for s in SECTION_NAMES)
    fences = _listing(f"```{lang}" for lang in CIRCUIT_LANGUAGES)
    digits = strict_yaml.MAX_NUMBER_DIGITS
    signed = (
        "Running needs `permissions.execute` to admit the caller and a signature by a key this server\n"
        "  trusts (sign_maml, then verify_maml)."
        if settings.require_signed_execution
        else "Running needs `permissions.execute` to admit the caller."
    )
    return f"""\
# MAML documents (`.maml.md`): the rules validate_maml enforces

## Layout
A UTF-8 text file: a line `---`, the YAML front matter (one mapping of fields), a line `---`, then a
Markdown body (which may be empty). At most {settings.max_document_bytes} bytes; no byte order mark,
no NUL characters.

## Front matter: required fields
- `maml_version`: a quoted string, `"2.0"` (a bare number is refused).
- `id`: `urn:uuid:` (lower case) followed by a UUID in canonical 8-4-4-4-12 hex form. Make a new
  random one for a new document; never reuse the example's.
- `type`: one of {types}.

## Front matter: optional fields
- `origin`: `agent://<name>` (letters, digits and `._~@:+-/`; no `*`).
- `title`: a string; it wins over the body's `# ` title.
- `requires`: a mapping; `libs` and `apis` are lists of strings; `qubits`, `shots`, `max_tokens` are
  plain integers >= 1 (`"3"`, `3.0`, `true` and `0x3` are refused). This server allows at most
  {settings.max_qubits} qubits, {settings.max_shots} shots and {settings.max_tokens} max_tokens.
- `permissions`: a mapping with only the keys `read`, `write`, `execute`, each a list of entries:
  `*` (everyone), `agent://<sub>`, `scope:<scope>`, `role:<role>` or `gateway://<name>`; one `*` may
  end an entry as a prefix wildcard (`agent://*`, `scope:maml:*`). `write` implies `read`. Reading
  needs `read`, signing needs `write`, running needs `execute`.
  An absent key admits nobody.
- `verification`: a mapping of anything; `created_at`: an ISO 8601 time as a string.
- Do not write a `signature:` entry: sign_maml adds it.
- Other fields are allowed and kept.

## Front matter: the YAML subset
- The front matter is a block mapping (not one `{{...}}` flow mapping), nested at most
  {settings.max_yaml_depth} levels deep (the top mapping is level 1).
- Refused: anchors (`&x`), aliases (`*x`), tags (`!!str`), merge keys (`<<`), duplicate keys, keys
  that are not strings (quote keys such as `on`, `1`, `null`), more than one YAML document.
- Plain scalars: `true`/`false`/`yes`/`no`/`on`/`off` are booleans, `~`/`null` is null, decimal
  integers without a leading zero and decimals with a point are numbers (at most {digits} digits);
  everything else, dates, `017`, `0x1A`, `1_000` and `1e3` included, stays a string. Quote text
  that looks like a number.

## Body
- Title: the first `# ` line before any section.
- Sections start with `## `; the known ones are {sections}. Each known section may appear only
  once; other section names are allowed.
- Code blocks are fenced with ``` or ~~~ and must be closed.
- In `## Input_Schema` and `## Output_Schema`, every ```json (or unlabelled) block must hold one JSON
  object: no `NaN` or `Infinity`, nesting at most {parser.SCHEMA_MAX_DEPTH} levels, number literals
  at most {parser.SCHEMA_MAX_NUMBER_CHARS} characters.

## What runs it
- A quantum circuit runs with run_quantum_circuit: put exactly one circuit block in
  `## Code_Blocks`, fenced as one of {fences} (Python blocks are never executed). The run is
  bounded by `requires.qubits` and `requires.shots`.
- A document of type `prompt` or `workflow` runs with query_openai: `## Context` becomes the system
  message, `## Intent` the question, and a ```json block in `## Output_Schema` the JSON Schema the
  answer must satisfy.
- {signed}
"""
