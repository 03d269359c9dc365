"""Turning what an agent submits into a Qiskit `QuantumCircuit`, safely and with clear errors.

Three source languages are accepted:

- OpenQASM 2 (```` ```qasm ````, `qasm2`, `openqasm`, `openqasm2`), read by `qiskit.qasm2.loads`;
- OpenQASM 3 (```` ```qasm3 ````, `openqasm3`), read as `qiskit.qasm3.loads` does: `openqasm3.parse`
  then `qiskit_qasm3_import.convert` (called separately, to place errors qiskit reports without a line);
- a small, fixed subset of Qiskit Python (```` ```qiskit ````), read by a restricted interpreter over
  Python's `ast` - the text is never executed, imported, compiled or evaluated by Python.

A ```` ```qasm ```` or ```` ```openqasm ```` block, and raw text without a language, is read by its
`OPENQASM 2.x;` / `OPENQASM 3.x;` header.

Rules, all checked before anything is handed to a parser:

- Size: the text is at most `max_bytes` (UTF-8); OpenQASM 3 at most `max_qasm3_bytes`, because the
  reference OpenQASM 3 parser (ANTLR, pure Python) reads only about 6-20 kB a second.
- Includes: only `include "qelib1.inc";` (OpenQASM 2) and `include "stdgates.inc";` (OpenQASM 3).
  `qiskit.qasm2.loads` is also given an empty include path, so no file is ever read from disk.
- Constructs the simulator cannot run, or whose cost cannot be bounded, are refused with their line:
  `opaque`; in OpenQASM 3 `while`, `def`, `extern`, `cal`, `defcal`, `defcalgrammar`, `input`,
  `output`, `let` (aliases), `box`, `return` and pragmas, and gate modifiers (`inv @`, `pow(k) @`,
  `ctrl @`, `negctrl @`) on anything but built-in and stdgates.inc gates (qiskit would expand the
  whole body of a custom gate at once). OpenQASM 3 `for` ranges may only use integer literals up to
  10**9 with + and - (a range longer than sys.maxsize makes qiskit abort the process).
- Nesting: brackets at most 32 deep.
- Allocation: register sizes must be integer literals; the declared qubits (and, separately, the
  declared classical bits) may not exceed `max_qubits_declared`, physical qubits `$n` likewise. An upper
  bound on the operations the parser will create (register broadcasts times custom gate bodies) is
  computed from the tokens and must stay within `max_operations`.
- After parsing, the operations the circuit really runs - counting every iteration of a `for` loop and
  the bodies of custom gates - must stay within `max_operations`; the circuit must have no free
  parameters, and every operation must be simulable (no opaque gates, no `while`, no `box`).

A circuit without any measurement gets `measure_all()` appended (`measured_all_added`), so that a
simulator returns counts. Errors are `InvalidDocument` whose `line` is the line in the enclosing
document (the parser's own explanation is kept, tracebacks and paths are not), or `RequestTooLarge`.

In a document, the circuit is the one code block in `## Code_Blocks` whose fence language is one of
`CIRCUIT_LANGUAGES`; other blocks (python, json, ...) are ignored and never executed.

The ```` ```qiskit ```` subset, exactly:

    from qiskit import QuantumCircuit        # also: import qiskit, from qiskit.circuit import
    import math                               #   QuantumCircuit, import numpy [as np], from math
    qc = QuantumCircuit(3, 3)                 #   import pi - accepted and ignored
    qc.h(0)
    for i in range(2):                        # range(a[, b[, c]]); loops nest
        qc.cx(i, i + 1)
    qc.rz(pi / 4, 2)
    qc.measure([0, 1, 2], [0, 1, 2])

Exactly one circuit variable (any name), created once, before use; calls to the gate methods in
`_GATE_METHODS`; arguments built from int and float literals, `pi` / `math.pi` / `np.pi` /
`numpy.pi`, loop variables, unary minus, `+ - * / // % **` and lists or tuples of these. Nothing
else - no other calls, names, attributes, subscripts, assignments, `while`, `def`, `lambda`,
comprehensions or f-strings. Loops are bounded before they run, and every executed statement counts
against `max_operations`.
"""

from __future__ import annotations

import ast
import bisect
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from mcp_server.errors import InvalidDocument, MacroslowError, RequestTooLarge

if TYPE_CHECKING:
    from qiskit import QuantumCircuit
    from qiskit.circuit import Operation

    from mcp_server.maml.model import CodeBlock, MamlDocument

__all__ = ["CIRCUIT_LANGUAGES", "Circuit", "load_document", "load_text", "looks_like_maml"]

CIRCUIT_LANGUAGES: dict[str, str] = {
    "qasm": "openqasm2",  # read by its header: OPENQASM 3 makes it openqasm3
    "qasm2": "openqasm2",
    "openqasm": "openqasm2",  # read by its header, like "qasm"
    "openqasm2": "openqasm2",
    "qasm3": "openqasm3",
    "openqasm3": "openqasm3",
    "qiskit": "qiskit",
}
_BY_HEADER = frozenset({"qasm", "openqasm"})
_LANGUAGE_NAMES = frozenset(CIRCUIT_LANGUAGES.values())
_PYTHON_LANGUAGES = frozenset({"python", "py", "python3"})
_CODE_BLOCKS = "Code_Blocks"

_MAX_NESTING = 32  # brackets in QASM, expressions in the qiskit subset, custom gates inside each other
_MAX_NUMBER = 10**18  # integers in the qiskit subset
_MAX_BYTES = 1_048_576
_MAX_LOOP_BOUND = 10**9  # literals in OpenQASM 3 for-loop ranges


@dataclass(frozen=True)
class Circuit:
    """A parsed, checked circuit, ready to run (it has measurements)."""

    circuit: QuantumCircuit
    language: str  # "openqasm2" | "openqasm3" | "qiskit"
    digest: str  # "sha256:<hex>" of the source text exactly as given (UTF-8)
    qubits: int
    clbits: int
    depth: int
    gate_counts: dict[str, int]  # circuit.count_ops(), sorted by name
    measured_all_added: bool  # the source had no measurement; measure_all() was appended
    line: int  # 1-based line in the enclosing document where the source starts


@dataclass(frozen=True)
class _Limits:
    max_bytes: int
    max_operations: int
    max_qubits: int
    max_qasm3_bytes: int


@dataclass(frozen=True)
class _Where:
    """Where the source sits: `offset` lines before it in the enclosing document, and its field."""

    offset: int
    field: str | None

    def line(self, line_in_source: int | None) -> int | None:
        return None if line_in_source is None else self.offset + line_in_source

    def fail(self, message: str, line_in_source: int | None = None) -> NoReturn:
        raise InvalidDocument(message, field=self.field, line=self.line(line_in_source))

    def at(self, line_in_source: int) -> str:
        """A "line N: " prefix for RequestTooLarge messages, which carry no line of their own."""
        return f"line {self.offset + line_in_source}: "


# --------------------------------------------------------------------------------------------------
# Public entry points


def load_text(
    text: str,
    *,
    language: str | None = None,
    max_bytes: int = _MAX_BYTES,
    max_operations: int = 100_000,
    line_offset: int = 0,
    max_qubits_declared: int = 1024,
    max_qasm3_bytes: int = 32_768,
) -> Circuit:
    """Parse and check one circuit source.

    `language` is "openqasm2", "openqasm3", "qiskit", a key of `CIRCUIT_LANGUAGES`, or None to read
    the OpenQASM header. `line_offset` is the number of document lines before the source's first line.
    """
    limits = _Limits(max_bytes, max_operations, max_qubits_declared, max_qasm3_bytes)
    return _load(text, language, limits, _Where(line_offset, None))


def load_document(
    document: MamlDocument,
    *,
    max_operations: int = 100_000,
    max_qubits_declared: int = 1024,
    max_qasm3_bytes: int = 32_768,
) -> Circuit:
    """The circuit of a MAML document: its one circuit block in `## Code_Blocks`."""
    block = _circuit_block(document)
    limits = _Limits(_MAX_BYTES, max_operations, max_qubits_declared, max_qasm3_bytes)
    language = block.language.lower()
    return _load(
        block.code,
        None if language in _BY_HEADER else CIRCUIT_LANGUAGES[language],
        limits,
        _Where(block.line, _CODE_BLOCKS),
        generic_qasm=language in _BY_HEADER,
    )


def looks_like_maml(text: str) -> bool:
    """True when the text starts with a `---` front-matter line (after an optional BOM and blank lines)."""
    for line in text.removeprefix("\ufeff").splitlines():
        if line.strip():
            return line.rstrip() == "---"
    return False


# --------------------------------------------------------------------------------------------------
# Choosing the block and the language


def _circuit_block(document: MamlDocument) -> CodeBlock:
    blocks = [b for b in document.code_blocks if b.section == _CODE_BLOCKS]
    circuits = [b for b in blocks if b.language.lower() in CIRCUIT_LANGUAGES]
    if len(circuits) == 1:
        return circuits[0]
    if circuits:
        lines = ", ".join(str(b.line) for b in circuits)
        raise InvalidDocument(
            f"found {len(circuits)} circuit blocks (lines {lines}); a document must have exactly one",
            field=_CODE_BLOCKS,
            line=circuits[1].line,
        )
    section = document.section(_CODE_BLOCKS)
    where = section.line if section else None
    accepted = ", ".join(f"```{name}" for name in CIRCUIT_LANGUAGES)
    if any(b.language.lower() in _PYTHON_LANGUAGES for b in blocks):
        raise InvalidDocument(
            "Python code blocks are never executed; give the circuit as a ```qasm (OpenQASM 2), "
            "```openqasm3 or ```qiskit block (the qiskit block is a restricted subset: QuantumCircuit, "
            "gate calls and for-range loops)",
            field=_CODE_BLOCKS,
            line=where,
        )
    elsewhere = [b for b in document.code_blocks if b.language.lower() in CIRCUIT_LANGUAGES]
    hint = f"; the block at line {elsewhere[0].line} is outside that section" if elsewhere else ""
    raise InvalidDocument(
        f"no circuit block in '## Code_Blocks'; add one fenced as {accepted}{hint}",
        field=_CODE_BLOCKS,
        line=where,
    )


# Atomic and possessive, so that no input makes the skipping of blanks and comments backtrack.
_HEADER = re.compile(r"(?>\s+|//[^\n]*|/\*.*?\*/)*+OPENQASM\s+(?P<major>\d+)(?:\.\d+)?\s*;", re.DOTALL)


def _header_version(text: str) -> int | None:
    """The major version of a leading `OPENQASM x.y;` statement (after blanks and comments)."""
    match = _HEADER.match(text)
    return int(match["major"]) if match else None


def _resolve_language(text: str, language: str | None, where: _Where, generic_qasm: bool) -> str:
    """The language to read `text` as: the one given, or the header's for generic QASM and None."""
    resolved: str | None = None
    if language is not None and not generic_qasm:
        key = language.lower()
        if key in _BY_HEADER:
            generic_qasm = True
        else:
            resolved = CIRCUIT_LANGUAGES.get(key, key)
            if resolved not in _LANGUAGE_NAMES:
                names = ", ".join(sorted(_LANGUAGE_NAMES))
                where.fail(f"unknown circuit language {language!r}; use one of {names}")
    if resolved == "qiskit":
        return resolved
    version = _header_version(text)
    if version is not None and version not in (2, 3):
        where.fail(f"OpenQASM {version} is not supported; use OPENQASM 2.0 or OPENQASM 3.0", 1)
    if resolved is not None:
        if version is not None and resolved != f"openqasm{version}":
            where.fail(f"the source is marked {language} but its header says OPENQASM {version}", 1)
        return resolved
    if version is not None:
        return f"openqasm{version}"
    if generic_qasm:
        return "openqasm2"
    where.fail(
        "the circuit has no OpenQASM header; start it with 'OPENQASM 2.0;' or 'OPENQASM 3.0;' "
        "(or give its language)",
        1,
    )


# --------------------------------------------------------------------------------------------------
# The common path


def _load(
    text: str, language: str | None, limits: _Limits, where: _Where, *, generic_qasm: bool = False
) -> Circuit:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        where.fail("the circuit text contains unpaired surrogates; it must be valid Unicode")
    if len(data) > limits.max_bytes:
        raise RequestTooLarge(
            "circuit text is larger than allowed", requested=len(data), allowed=limits.max_bytes
        )
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resolved = _resolve_language(text, language, where, generic_qasm)
    if resolved == "qiskit":
        circuit = _run_program(_compile_program(text, where), limits, where)
    elif resolved == "openqasm3":
        if len(data) > limits.max_qasm3_bytes:
            raise RequestTooLarge(
                "OpenQASM 3 text is larger than allowed (its parser is slow; OpenQASM 2 may be longer)",
                requested=len(data),
                allowed=limits.max_qasm3_bytes,
            )
        _precheck_qasm(text, 3, limits, where)
        circuit = _parse_qasm3(text, where)
    else:
        _precheck_qasm(text, 2, limits, where)
        circuit = _parse_qasm2(text, where)
    return _finish(circuit, resolved, digest, limits, where)


def _finish(circuit: QuantumCircuit, language: str, digest: str, limits: _Limits, where: _Where) -> Circuit:
    if circuit.num_qubits == 0:
        where.fail("the circuit has no qubits")
    for kind, count in (("qubits", circuit.num_qubits), ("classical bits", circuit.num_clbits)):
        if count > limits.max_qubits:
            raise RequestTooLarge(
                f"the circuit has too many {kind}", requested=count, allowed=limits.max_qubits
            )
    if circuit.parameters:
        names = ", ".join(sorted(p.name for p in circuit.parameters))
        where.fail(f"the circuit has unbound parameters ({names}); write the values as numbers")
    added = not _has_measurement(circuit)
    if added:
        circuit.measure_all()
    operations = _Expansion(limits, where).circuit(circuit, 0)
    if operations > limits.max_operations:
        raise RequestTooLarge(
            "the circuit runs more operations than allowed (counting loop iterations and custom gate bodies)",
            requested=operations,
            allowed=limits.max_operations,
        )
    counts = {str(name): int(count) for name, count in circuit.count_ops().items()}
    return Circuit(
        circuit=circuit,
        language=language,
        digest=digest,
        qubits=circuit.num_qubits,
        clbits=circuit.num_clbits,
        depth=int(circuit.depth()),
        gate_counts=dict(sorted(counts.items())),
        measured_all_added=added,
        line=where.offset + 1,
    )


def _length(indexset: Sequence[int]) -> int:
    if isinstance(indexset, range):  # len() fails beyond sys.maxsize
        step = indexset.step
        span = indexset.stop - indexset.start if step > 0 else indexset.start - indexset.stop
        return max(0, (span + abs(step) - 1) // abs(step))
    return len(indexset)


def _has_measurement(circuit: QuantumCircuit) -> bool:
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.name == "measure":
            return True
        if any(_has_measurement(block) for block in getattr(operation, "blocks", ())):
            return True
    return False


class _Expansion:
    """Counts the operations a circuit runs: loop bodies times their iterations, custom gates by their
    definitions (once per gate, memoised). Refuses what a simulator cannot run or bound."""

    def __init__(self, limits: _Limits, where: _Where) -> None:
        from qiskit.circuit import Barrier, BreakLoopOp, ContinueLoopOp, ControlFlowOp
        from qiskit.circuit.library import UnitaryGate, get_standard_gate_name_mapping

        self._where = where
        self._standard = {name: op.base_class for name, op in get_standard_gate_name_mapping().items()}
        self._terminal = (Barrier, BreakLoopOp, ContinueLoopOp, UnitaryGate)
        self._control_flow = ControlFlowOp
        self._memo: dict[tuple[str, str, int, int], int] = {}

    def circuit(self, circuit: QuantumCircuit, depth: int) -> int:
        total = 0
        for instruction in circuit.data:
            total += self.operation(instruction.operation, depth)
        return total

    def operation(self, op: Operation, depth: int) -> int:
        if isinstance(op, self._control_flow):
            return self._control(op, depth)
        standard = self._standard.get(op.name)
        if (standard is not None and standard is getattr(op, "base_class", None)) or isinstance(
            op, self._terminal
        ):
            return 1
        key = (type(op).__qualname__, op.name, op.num_qubits, op.num_clbits)
        if key not in self._memo:
            if depth >= _MAX_NESTING:
                self._where.fail(f"custom gates are nested more than {_MAX_NESTING} levels deep")
            definition = getattr(op, "definition", None)
            if definition is None:
                self._where.fail(f"'{op.name}' has no definition (an opaque gate); a simulator cannot run it")
            self._memo[key] = max(1, self.circuit(definition, depth + 1))
        return self._memo[key]

    def _control(self, op: Any, depth: int) -> int:
        if depth >= _MAX_NESTING:
            self._where.fail(f"control flow is nested more than {_MAX_NESTING} levels deep")
        bodies = sum(self.circuit(block, depth + 1) for block in op.blocks)
        if op.name == "for_loop":
            return 1 + _length(op.params[0]) * bodies
        if op.name in ("if_else", "switch_case"):
            return 1 + bodies
        if op.name == "while_loop":
            self._where.fail("while loops are not allowed: their length cannot be bounded; use a for loop")
        self._where.fail(f"'{op.name}' is not supported by the simulator")


# --------------------------------------------------------------------------------------------------
# OpenQASM: checks on the tokens, before any parser sees the text

_ALLOWED_INCLUDE = {2: "qelib1.inc", 3: "stdgates.inc"}
_TOKENS = {
    2: re.compile(
        r"""(?P<space>\s+) | (?P<comment>//[^\n]*) | (?P<str>"[^"\n]*")
          | (?P<id>[^\W\d]\w*) | (?P<num>\d[\w.]*) | (?P<phys>\$\d+) | (?P<op>.)""",
        re.VERBOSE | re.DOTALL,
    ),
    # As the ANTLR lexer: block comments; pragmas and annotations run to the end of their line. An
    # unclosed block comment runs to the end of the text (ANTLR refuses such a program).
    3: re.compile(
        r"""(?P<space>\s+) | (?P<comment>//[^\n]*|/\*.*?(?:\*/|\Z)) | (?P<str>"[^"\n]*"|'[^'\n]*')
          | (?P<eol>(?:\#?pragma|@[^\W\d][\w.]*)(?!\w)[^\n]*)
          | (?P<id>[^\W\d]\w*) | (?P<num>\d[\w.]*) | (?P<phys>\$\d+) | (?P<op>.)""",
        re.VERBOSE | re.DOTALL,
    ),
}
_REFUSED = {
    2: {"opaque": "opaque gates have no definition, so a simulator cannot run them"},
    3: {
        "opaque": "opaque gates have no definition, so a simulator cannot run them",
        "while": "while loops are not allowed: their length cannot be bounded; use a for loop",
        "def": "subroutines (def) are not supported",
        "return": "subroutines (def, return) are not supported",
        "extern": "extern functions are not supported",
        "cal": "pulse-level calibrations (cal) are not supported",
        "defcal": "pulse-level calibrations (defcal) are not supported",
        "defcalgrammar": "pulse-level calibrations (defcalgrammar) are not supported",
        "input": "input parameters are not supported; write the values into the circuit",
        "output": "output declarations are not supported",
        "let": "aliases (let) are not supported",
        "box": "box is not supported by the simulator",
    },
}
_MODIFIERS = frozenset({"inv", "pow", "ctrl", "negctrl"})
_STDGATES = frozenset(
    {
        *("p", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "cx", "cy", "cz"),
        *("cp", "crx", "cry", "crz", "ch", "swap", "ccx", "cswap", "cu", "CX", "phase", "cphase"),
        *("id", "u1", "u2", "u3", "U", "gphase"),
    }
)
_PLAIN_INT = re.compile(r"\d+")


@dataclass(frozen=True)
class _Token:
    kind: str  # id, num, str, phys, eol, op
    text: str
    line: int  # in the source, 1-based


def _tokens(text: str, version: int) -> list[_Token]:
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    out: list[_Token] = []
    for match in _TOKENS[version].finditer(text):
        kind = match.lastgroup or "op"
        if kind not in ("space", "comment"):
            out.append(_Token(kind, match.group(), bisect.bisect_right(starts, match.start())))
    return out


def _precheck_qasm(text: str, version: int, limits: _Limits, where: _Where) -> None:
    tokens = _tokens(text, version)
    _check_nesting(tokens, where)  # first: it bounds the cost of the bracket matching below
    _check_statements(tokens, version, where)
    _QasmEstimate(tokens, version, limits, where).run()


def _check_nesting(tokens: list[_Token], where: _Where) -> None:
    depth = 0
    for token in tokens:
        if token.text in _OPENERS:
            depth += 1
            if depth > _MAX_NESTING:
                where.fail(f"brackets are nested more than {_MAX_NESTING} deep", token.line)
        elif token.text in _CLOSERS:
            depth = max(0, depth - 1)


def _check_statements(tokens: list[_Token], version: int, where: _Where) -> None:
    """Includes, refused keywords, and (OpenQASM 3) for-loop ranges and gate modifiers."""
    refused = _REFUSED[version]
    checked = 0  # modifier chains are checked from their first modifier, once
    for index, token in enumerate(tokens):
        if token.kind == "eol":
            if token.text.split(None, 1)[0].lstrip("#") == "pragma":
                where.fail("pragmas are not supported", token.line)
            continue
        if token.kind != "id":
            continue
        if token.text in refused:
            where.fail(refused[token.text], token.line)
        elif token.text == "include":
            _check_include(tokens, index, version, where)
        elif version == 3 and token.text == "for":
            _check_for(tokens, index, where)
        elif version == 3 and token.text in _MODIFIERS and index >= checked:
            checked = _check_modifiers(tokens, index, where)


def _check_include(tokens: list[_Token], index: int, version: int, where: _Where) -> None:
    allowed = _ALLOWED_INCLUDE[version]
    name = tokens[index + 1] if index + 1 < len(tokens) else None
    if name is None or name.kind != "str" or name.text[1:-1] != allowed:
        shown = name.text if name is not None else "nothing"
        where.fail(
            f'include {shown} is not allowed; OpenQASM {version} may only include "{allowed}"',
            tokens[index].line,
        )


def _check_for(tokens: list[_Token], index: int, where: _Where) -> None:
    """`for int i in [a:b:c]` / `in {a, b}`: integer literals up to 10**9 joined by + and - only.

    qiskit keeps a loop range as a Python range, but one longer than sys.maxsize makes it build a
    list instead, and the process aborts on the allocation; so loop bounds are kept small by syntax.
    """
    start = index + 1
    end = min(len(tokens), index + 8)  # for uint[32] i in
    while start < end and tokens[start].text not in ("in", ";", "{", "}"):
        start += 1
    if start >= end or tokens[start].text != "in":
        where.fail("for loops must have the form 'for int i in [a:b] { ... }'", tokens[index].line)
    if start + 1 >= len(tokens) or tokens[start + 1].text not in ("[", "{"):
        return  # not a range or a set; the parser or the importer will refuse it
    for token in tokens[start + 2 : _closing(tokens, start + 1)]:
        if token.kind == "num" and _PLAIN_INT.fullmatch(token.text) and int(token.text) <= _MAX_LOOP_BOUND:
            continue
        if token.text not in ("+", "-", ":", ",", "(", ")"):
            where.fail(
                f"for-loop ranges may only use integer literals up to {_MAX_LOOP_BOUND:.0e}, + and -, "
                f"not {token.text!r}",
                token.line,
            )


def _check_modifiers(tokens: list[_Token], index: int, where: _Where) -> int:
    """A chain `inv @ ctrl(2) @ pow(0.5) @ gate`: each ctrl(n) a small literal, the gate built in or
    from stdgates.inc (modifying a custom gate makes qiskit expand all of its body). Returns the
    index after the chain."""
    position = index
    while position < len(tokens) and tokens[position].text in _MODIFIERS:
        modifier = tokens[position]
        position += 1
        if position < len(tokens) and tokens[position].text == "(":
            close = _closing(tokens, position)
            inner = tokens[position + 1 : close]
            if modifier.text in ("ctrl", "negctrl") and not (
                len(inner) == 1 and _PLAIN_INT.fullmatch(inner[0].text) and 1 <= int(inner[0].text) <= 64
            ):
                where.fail(f"{modifier.text}(n) needs a plain integer n between 1 and 64", modifier.line)
            position = close + 1
        if position >= len(tokens) or tokens[position].text != "@":
            return position  # not a modifier chain; the parser will say what it is
        position += 1
    gate = tokens[position].text if position < len(tokens) else ""
    if gate not in _STDGATES:
        where.fail(
            f"gate modifiers (inv, pow, ctrl, negctrl) may only be applied to built-in and stdgates.inc "
            f"gates, not to '{gate}'",
            tokens[index].line,
        )
    return position


_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = frozenset(_OPENERS.values())


def _closing(tokens: Sequence[_Token], opening: int) -> int:
    """Index of the bracket closing the one at `opening`; of a mismatched closing bracket; or the
    length of `tokens` when it is never closed (the parser refuses the last two)."""
    stack = [_OPENERS[tokens[opening].text]]
    for index in range(opening + 1, len(tokens)):
        text = tokens[index].text
        if text in _OPENERS:
            stack.append(_OPENERS[text])
        elif text in _CLOSERS and (text != stack.pop() or not stack):
            return index
    return len(tokens)


class _QasmEstimate:
    """Register sizes, and an upper bound on the operations the parser will create.

    Each statement costs its broadcast width (the size of each register it names whole or by a
    range, else 1) times the body size of the custom gate it calls (else 1). Gate bodies are sized
    from their statements, using the gates defined before. Loop bodies count once here, as the parser
    reads them once; the real iteration count is checked after parsing. Declarations and physical
    qubits are counted wherever they appear, even where the language forbids them.
    """

    def __init__(self, tokens: list[_Token], version: int, limits: _Limits, where: _Where) -> None:
        self.tokens = [token for token in tokens if token.kind != "eol"]  # annotations are not code
        self.limits = limits
        self.where = where
        self.cap = limits.max_operations + 1
        self.registers: dict[str, int] = {}
        self.gates: dict[str, int] = {}
        self.declared = {"qubits": 0, "classical bits": 0}
        self.physical = 0
        self.declare = frozenset({"qreg", "creg"} if version == 2 else {"qreg", "creg", "qubit", "bit"})

    def run(self) -> None:
        tokens = self.tokens
        total = 0
        start = index = 0  # the current statement is tokens[start:index]
        while index < len(tokens):
            token = tokens[index]
            if index == start and token.kind == "id" and token.text == "gate":
                start = index = self._gate(index)
                continue
            if token.text in (";", "{", "}"):
                total += self._statement(tokens[start:index])
                start = index + 1
            index += 1
        total += self._statement(tokens[start:])
        if total > self.limits.max_operations:
            raise RequestTooLarge(
                "the circuit would create more operations than allowed (register broadcasts times "
                "custom gate bodies)",
                requested=total,
                allowed=self.limits.max_operations,
            )

    def _gate(self, index: int) -> int:
        """Size the gate defined at `index`; return the index after its definition."""
        tokens = self.tokens
        opening = index
        while opening < len(tokens) and tokens[opening].text not in ("{", ";", "}"):
            opening += 1
        if opening >= len(tokens) or tokens[opening].text != "{":
            self._declarations(tokens[index:opening])
            return opening  # malformed; the parser will say so
        close = _closing(tokens, opening)
        size = 0
        start = opening + 1
        for position in range(opening + 1, close + 1):
            if position == close or tokens[position].text == ";":
                body_statement = tokens[start:position]
                if body_statement:
                    size += self._callee(body_statement)
                    self._declarations(body_statement)
                start = position + 1
        name = tokens[index + 1].text if index + 1 < len(tokens) else ""
        self.gates[name] = min(self.cap, max(1, size))
        return close + 1

    def _callee(self, statement: Sequence[_Token]) -> int:
        return max([1, *(self.gates.get(t.text, 0) for t in statement if t.kind == "id")])

    def _statement(self, statement: Sequence[_Token]) -> int:
        if not statement:
            return 0
        first = statement[0].text
        declaration = first in self.declare and all(token.text != "=" for token in statement)
        free = declaration or first in ("OPENQASM", "include")
        cost = 0 if free else self._width(statement) * self._callee(statement)
        self._declarations(statement)
        return cost

    def _width(self, statement: Sequence[_Token]) -> int:
        width = 1
        for position, token in enumerate(statement):
            size = self.registers.get(token.text) if token.kind == "id" else None
            if size is None:
                continue
            if position + 1 < len(statement) and statement[position + 1].text == "[":
                inner = statement[position + 2 : _closing(statement, position + 1)]
                if len(inner) == 1 and _PLAIN_INT.fullmatch(inner[0].text):
                    size = 1
            width = max(width, size)
        return width

    def _declarations(self, statement: Sequence[_Token]) -> None:
        for position, token in enumerate(statement):
            if token.kind == "id" and token.text in self.declare:
                self._declare(statement, position)
            elif token.kind == "phys":
                self._physical(token)

    def _declare(self, statement: Sequence[_Token], position: int) -> None:
        """`qreg q[3]` / `creg c[3]` / `qubit[3] q` / `bit c`, anywhere in a statement."""
        keyword = statement[position]
        after = position + 1
        size_tokens: Sequence[_Token] | None = None
        name: _Token | None = None
        if keyword.text in ("qreg", "creg"):
            name = statement[after] if after < len(statement) else None
            if after + 1 < len(statement) and statement[after + 1].text == "[":
                size_tokens = statement[after + 2 : _closing(statement, after + 1)]
        elif after < len(statement) and statement[after].text == "[":
            close = _closing(statement, after)
            size_tokens = statement[after + 1 : close]
            name = statement[close + 1] if close + 1 < len(statement) else None
        elif after < len(statement):
            name = statement[after]
        if name is not None and name.kind != "id":
            name = None
        if name is None and size_tokens is None:
            return  # not a declaration (e.g. a cast); the parser decides
        size = 1
        if size_tokens is not None:
            if len(size_tokens) != 1 or not _PLAIN_INT.fullmatch(size_tokens[0].text):
                self.where.fail("register sizes must be plain integers, as in qubit[3] q;", keyword.line)
            size = int(size_tokens[0].text)
        kind = "qubits" if keyword.text in ("qreg", "qubit") else "classical bits"
        self.declared[kind] += size
        if self.declared[kind] + (self.physical if kind == "qubits" else 0) > self.limits.max_qubits:
            raise RequestTooLarge(
                f"{self.where.at(keyword.line)}the circuit declares more {kind} than allowed",
                requested=self.declared[kind],
                allowed=self.limits.max_qubits,
            )
        if name is not None:
            self.registers[name.text] = size

    def _physical(self, token: _Token) -> None:
        index = int(token.text[1:])
        if index >= self.limits.max_qubits or index + 1 + self.declared["qubits"] > self.limits.max_qubits:
            raise RequestTooLarge(
                f"{self.where.at(token.line)}physical qubit {token.text} is beyond the allowed qubits",
                requested=index + 1,
                allowed=self.limits.max_qubits,
            )
        self.physical = max(self.physical, index + 1)


# --------------------------------------------------------------------------------------------------
# OpenQASM: the parsers, and their errors

_QASM2_POSITION = re.compile(r"<input>:(?P<line>\d+),(?P<column>\d+):\s*(?P<message>.*)", re.DOTALL)
_QASM3_POSITIONS = (
    re.compile(r"L(?P<line>\d+):C(?P<column>\d+):\s*(?P<message>.*)", re.DOTALL),  # openqasm3 parser
    re.compile(r"(?P<line>\d+),(?P<column>\d+):\s*(?P<message>.*)", re.DOTALL),  # qiskit-qasm3-import
)


def _parse_qasm2(text: str, where: _Where) -> QuantumCircuit:
    from qiskit import qasm2

    try:
        # An empty include path: "qelib1.inc" is built in, and nothing is ever read from disk.
        # LEGACY_CUSTOM_INSTRUCTIONS: the gates Qiskit itself writes into QASM 2 (sx, rzx, ...) resolve
        # to Qiskit's own gates, so circuits exported by `qasm2.dumps` load back.
        return qasm2.loads(text, include_path=(), custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    except MacroslowError:
        raise
    except Exception as exc:
        message = _message(exc)
        match = _QASM2_POSITION.match(message)
        if match is None:
            where.fail(f"OpenQASM 2: {_clean(message)}")
        detail = f"OpenQASM 2 (column {int(match['column']) + 1}): {_clean(match['message'])}"
        raise InvalidDocument(detail, field=where.field, line=where.line(int(match["line"]))) from exc


def _parse_qasm3(text: str, where: _Where) -> QuantumCircuit:
    """`qiskit.qasm3.loads` in its two public stages, so a conversion error can be placed."""
    import openqasm3
    from qiskit_qasm3_import import convert

    try:
        program = openqasm3.parse(text)
        return convert(program)
    except MacroslowError:
        raise
    except RecursionError as exc:
        raise InvalidDocument(
            "OpenQASM 3: the program is nested too deeply", field=where.field, line=where.line(1)
        ) from exc
    except Exception as exc:
        line, column, message = _qasm3_error(exc)
        if line is None and "program" in locals():
            line = _failing_statement(program)
        detail = f"OpenQASM 3{'' if column is None else f' (column {column + 1})'}: {message}"
        raise InvalidDocument(detail, field=where.field, line=where.line(line)) from exc


def _failing_statement(program: Any) -> int | None:
    """The line of the first top-level statement whose conversion fails, for errors that qiskit
    raises without a position (wrong number of qubits, an index out of range, ...): the shortest
    failing prefix of the program, by bisection."""
    from openqasm3 import ast as qasm3_ast
    from qiskit_qasm3_import import convert

    statements = program.statements
    good, bad = 0, len(statements)  # converting the first `good` statements works, the first `bad` fails
    while bad - good > 1:
        middle = (good + bad) // 2
        try:
            convert(qasm3_ast.Program(statements=statements[:middle], version=program.version))
            good = middle
        except Exception:
            bad = middle
    span = statements[bad - 1].span if bad else None
    return int(span.start_line) if span is not None else None


def _qasm3_error(exc: BaseException) -> tuple[int | None, int | None, str]:
    """Line (in the source), column (0-based) and explanation of an OpenQASM 3 import error.

    qiskit wraps the importer's errors; the position is in the message of one of the chained
    exceptions ("L5:C0: ..." from the parser, "5,0: ..." from the converter) or, for syntax errors
    (whose message is empty), on the ANTLR exception's offending token.
    """
    for error in _chain(exc):
        message = _message(error)
        for pattern in _QASM3_POSITIONS:
            match = pattern.match(message)
            if match:
                return int(match["line"]), int(match["column"]), _clean(match["message"])
        token = getattr(error, "offendingToken", None)
        if token is not None and getattr(token, "line", None) is not None:
            if getattr(token, "type", None) == -1:
                return int(token.line), int(token.column), "unexpected end of input (a missing '}' or ';'?)"
            hint = " (a missing ';' at the end of the line before?)" if token.column == 0 else ""
            return int(token.line), int(token.column), f"syntax error at {_clean(str(token.text))!r}{hint}"
    message = _clean(_message(exc)) or type(exc).__name__
    return None, None, message


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if current.args and isinstance(current.args[0], BaseException):
            yield current.args[0]
        current = current.__cause__ or current.__context__


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else str(exc)


def _clean(message: str) -> str:
    """One line, bounded, for people: parsers' messages sometimes span lines."""
    text = " ".join(message.split())
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------------------------------
# The qiskit subset: checked into a small program first, then run on a QuantumCircuit

_GATE_METHODS = frozenset(
    {
        *("h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "sxdg", "id", "rx", "ry", "rz", "p", "u"),
        *("cx", "cy", "cz", "ch", "swap", "ccx", "cswap", "crx", "cry", "crz", "cp", "rxx", "ryy", "rzz"),
        *("measure", "measure_all", "barrier", "reset"),
    }
)
_CONSTANT_MODULES = frozenset({"math", "np", "numpy"})
_RESERVED = frozenset({"pi", "range", "QuantumCircuit", "qiskit", *_CONSTANT_MODULES})
_IMPORTS = frozenset({("qiskit", None), ("math", None), ("numpy", None), ("numpy", "np")})
_FROM_IMPORTS = {"qiskit": "QuantumCircuit", "qiskit.circuit": "QuantumCircuit", "math": "pi", "numpy": "pi"}
_OPERATORS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_ALLOWED = (
    "a qiskit block may only contain imports of qiskit/math/numpy, one 'qc = QuantumCircuit(n[, m])', "
    "gate calls such as 'qc.h(0)' and 'for i in range(...)' loops of these"
)

_Number = int | float
_Value = _Number | list[_Number]


@dataclass(frozen=True)
class _Call:
    line: int
    method: str
    args: tuple[ast.expr, ...]


@dataclass(frozen=True)
class _Loop:
    line: int
    variable: str
    bounds: tuple[ast.expr, ...]
    body: tuple[_Call | _Loop, ...]


@dataclass(frozen=True)
class _Program:
    name: str
    line: int
    size: tuple[ast.expr, ...]
    body: tuple[_Call | _Loop, ...]


def _compile_program(source: str, where: _Where) -> _Program:
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        where.fail(f"Python syntax error: {exc.msg}", exc.lineno or 1)
    except (ValueError, RecursionError, MemoryError):
        where.fail("the qiskit block cannot be read as Python (null bytes or too deeply nested)", 1)
    return _Compiler(where).module(tree)


class _Compiler:
    """Checks the syntax tree against the subset; nothing runs here."""

    def __init__(self, where: _Where) -> None:
        self.where = where
        self.name: str | None = None
        self.created = 0
        self.size: tuple[ast.expr, ...] = ()

    def module(self, tree: ast.Module) -> _Program:
        body: list[_Call | _Loop] = []
        for statement in tree.body:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                self._import(statement)
            elif isinstance(statement, ast.Assign | ast.AnnAssign) and self.name is None:
                self._create(statement)
            else:
                body.append(self._statement(statement, ()))
        if self.name is None:
            self.where.fail("the qiskit block never creates its circuit: qc = QuantumCircuit(n[, m])", 1)
        return _Program(self.name, self.created, self.size, tuple(body))

    def _import(self, statement: ast.Import | ast.ImportFrom) -> None:
        if isinstance(statement, ast.Import):
            ok = all((alias.name, alias.asname) in _IMPORTS for alias in statement.names)
        else:
            wanted = _FROM_IMPORTS.get(statement.module or "")
            ok = statement.level == 0 and all(a.name == wanted and a.asname is None for a in statement.names)
        if not ok:
            self.where.fail(
                "only these imports are accepted (and ignored): import qiskit, import math, import numpy "
                "[as np], from qiskit[.circuit] import QuantumCircuit, from math (or numpy) import pi",
                statement.lineno,
            )

    def _create(self, statement: ast.Assign | ast.AnnAssign) -> None:
        target = statement.targets[0] if isinstance(statement, ast.Assign) else statement.target
        value = statement.value
        single = not isinstance(statement, ast.Assign) or len(statement.targets) == 1
        if not (
            single and isinstance(target, ast.Name) and isinstance(value, ast.Call) and _is_qc(value.func)
        ):
            self.where.fail(
                f"the first assignment must be 'qc = QuantumCircuit(n[, m])'; {_ALLOWED}", statement.lineno
            )
        if target.id in _RESERVED:
            self.where.fail(f"'{target.id}' cannot name the circuit", statement.lineno)
        if value.keywords or not 1 <= len(value.args) <= 2:
            self.where.fail(
                "QuantumCircuit takes one or two integers: QuantumCircuit(qubits[, clbits])", value.lineno
            )
        self.size = tuple(self._expression(arg, (), 0) for arg in value.args)
        self.name, self.created = target.id, statement.lineno

    def _statement(self, statement: ast.stmt, scope: tuple[str, ...]) -> _Call | _Loop:
        line = statement.lineno
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            return self._call(statement.value, scope)
        if isinstance(statement, ast.For):
            return self._loop(statement, scope)
        if isinstance(statement, ast.While):
            self.where.fail("while loops are not allowed; use 'for i in range(n)'", line)
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.where.fail(f"function and class definitions are not allowed; {_ALLOWED}", line)
        if isinstance(statement, ast.Import | ast.ImportFrom):
            self.where.fail("imports must be at the top level, before the circuit is used", line)
        if isinstance(statement, ast.Assign | ast.AugAssign | ast.AnnAssign):
            self.where.fail(f"only one assignment is allowed, 'qc = QuantumCircuit(...)'; {_ALLOWED}", line)
        if isinstance(statement, ast.Expr):
            self.where.fail(f"a bare expression is not allowed; {_ALLOWED}", line)
        self.where.fail(f"'{type(statement).__name__.lower()}' statements are not allowed; {_ALLOWED}", line)

    def _call(self, call: ast.Call, scope: tuple[str, ...]) -> _Call:
        func, line = call.func, call.lineno
        if self.name is None:
            self.where.fail("create the circuit first: qc = QuantumCircuit(n[, m])", line)
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == self.name
        ):
            if func.attr not in _GATE_METHODS:
                allowed = ", ".join(sorted(_GATE_METHODS))
                self.where.fail(
                    f"'{self.name}.{func.attr}' is not an allowed circuit method; allowed: {allowed}", line
                )
            if call.keywords:
                self.where.fail("keyword arguments are not allowed; pass arguments by position", line)
            if func.attr == "measure_all" and call.args:
                self.where.fail(f"{self.name}.measure_all() takes no arguments here", line)
            return _Call(line, func.attr, tuple(self._argument(arg, scope) for arg in call.args))
        if isinstance(func, ast.Name):
            self.where.fail(
                f"calling '{func.id}()' is not allowed; only the circuit's gate methods may be called, "
                f"as in {self.name}.h(0), and range() in a for loop",
                line,
            )
        shown = _dotted(func)
        self.where.fail(
            f"'{shown}(...)' is not allowed; only methods of the circuit '{self.name}' may be called", line
        )

    def _loop(self, loop: ast.For, scope: tuple[str, ...]) -> _Loop:
        line = loop.lineno
        if self.name is None:
            self.where.fail("create the circuit first: qc = QuantumCircuit(n[, m])", line)
        target, header = loop.target, loop.iter
        if not (
            isinstance(target, ast.Name)
            and isinstance(header, ast.Call)
            and isinstance(header.func, ast.Name)
            and header.func.id == "range"
            and not header.keywords
            and 1 <= len(header.args) <= 3
        ):
            self.where.fail("for loops must have the form 'for i in range(a[, b[, c]])'", line)
        if target.id in scope or target.id in _RESERVED or target.id == self.name:
            self.where.fail(f"'{target.id}' cannot be a loop variable here; choose another name", line)
        if loop.orelse:
            self.where.fail("for ... else is not allowed", line)
        bounds = tuple(self._expression(arg, scope, 0) for arg in header.args)
        inner = (*scope, target.id)
        return _Loop(line, target.id, bounds, tuple(self._statement(s, inner) for s in loop.body))

    def _argument(self, node: ast.expr, scope: tuple[str, ...]) -> ast.expr:
        if isinstance(node, ast.List | ast.Tuple):
            for element in node.elts:
                self._expression(element, scope, 1)
            return node
        return self._expression(node, scope, 0)

    def _expression(self, node: ast.expr, scope: tuple[str, ...], depth: int) -> ast.expr:
        line = getattr(node, "lineno", 1)
        if depth > _MAX_NESTING:
            self.where.fail(f"expressions may nest at most {_MAX_NESTING} deep", line)
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                self.where.fail(f"only int and float literals are allowed, not {node.value!r}", line)
        elif isinstance(node, ast.Name):
            if node.id not in scope and node.id != "pi":
                self.where.fail(f"unknown name '{node.id}'; only loop variables and pi may be used", line)
        elif isinstance(node, ast.Attribute):
            if not (
                isinstance(node.value, ast.Name) and node.value.id in _CONSTANT_MODULES and node.attr == "pi"
            ):
                self.where.fail(
                    f"'{_dotted(node)}' is not allowed; the only attributes are math.pi, np.pi and numpy.pi",
                    line,
                )
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            self._expression(node.operand, scope, depth + 1)
        elif isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            self._expression(node.left, scope, depth + 1)
            self._expression(node.right, scope, depth + 1)
        else:
            self.where.fail(
                f"{_describe(node)} is not allowed in arguments; use numbers, pi, loop variables, "
                "+ - * / // % ** and (as whole arguments) lists of these",
                line,
            )
        return node


def _is_qc(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id == "QuantumCircuit"
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "QuantumCircuit"
        and isinstance(func.value, ast.Name)
        and func.value.id == "qiskit"
    )


def _dotted(node: ast.expr, depth: int = 0) -> str:
    """`os.path.join`, `__import__(...).system`, `x[...].y`: how a refused callee is shown."""
    if depth > 8:
        return "..."
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value, depth + 1)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{_dotted(node.func, depth + 1)}(...)"
    if isinstance(node, ast.Subscript):
        return f"{_dotted(node.value, depth + 1)}[...]"
    return _describe(node)


def _describe(node: ast.AST) -> str:
    names = {
        ast.Call: "a call",
        ast.Subscript: "indexing",
        ast.Lambda: "lambda",
        ast.JoinedStr: "an f-string",
        ast.ListComp: "a comprehension",
        ast.GeneratorExp: "a generator",
        ast.Compare: "a comparison",
        ast.BoolOp: "and/or",
    }
    return names.get(type(node), f"'{type(node).__name__}'")


def _run_program(program: _Program, limits: _Limits, where: _Where) -> QuantumCircuit:
    from qiskit import QuantumCircuit

    runner = _Runner(program.name, limits, where)
    sizes = [runner.integer(arg, {}, program.line) for arg in program.size]
    for kind, size in zip(("qubits", "classical bits"), sizes, strict=False):
        if size < 0:
            where.fail(f"the number of {kind} cannot be negative", program.line)
        if size > limits.max_qubits:
            raise RequestTooLarge(
                f"{where.at(program.line)}the circuit declares more {kind} than allowed",
                requested=size,
                allowed=limits.max_qubits,
            )
    circuit = QuantumCircuit(*sizes)
    runner.block(circuit, program.body, {})
    return circuit


class _Runner:
    """Runs a checked program: evaluates numbers, counts every statement against `max_operations`."""

    def __init__(self, name: str, limits: _Limits, where: _Where) -> None:
        self.name = name
        self.limits = limits
        self.where = where
        self.used = 0

    def spend(self, count: int, line: int) -> None:
        self.used += count
        if self.used > self.limits.max_operations:
            raise RequestTooLarge(
                f"{self.where.at(line)}the qiskit block runs more statements than allowed",
                requested=self.used,
                allowed=self.limits.max_operations,
            )

    def block(self, circuit: QuantumCircuit, body: Sequence[_Call | _Loop], env: dict[str, int]) -> None:
        for statement in body:
            if isinstance(statement, _Loop):
                self.loop(circuit, statement, env)
            else:
                self.call(circuit, statement, env)

    def loop(self, circuit: QuantumCircuit, loop: _Loop, env: dict[str, int]) -> None:
        bounds = [self.integer(arg, env, loop.line) for arg in loop.bounds]
        if len(bounds) == 3 and bounds[2] == 0:
            self.where.fail("range() step cannot be zero", loop.line)
        steps = range(*bounds)
        if self.used + len(steps) > self.limits.max_operations:
            raise RequestTooLarge(
                f"{self.where.at(loop.line)}the loop would run {len(steps)} times, more than allowed",
                requested=self.used + len(steps),
                allowed=self.limits.max_operations,
            )
        for value in steps:
            self.spend(1, loop.line)
            self.block(circuit, loop.body, {**env, loop.variable: value})

    def call(self, circuit: QuantumCircuit, call: _Call, env: dict[str, int]) -> None:
        self.spend(1, call.line)
        args = [self.value(arg, env, call.line) for arg in call.args]
        try:
            getattr(circuit, call.method)(*args)
        except MacroslowError:
            raise
        except Exception as exc:
            self.where.fail(
                f"{self.name}.{call.method}(...): {_clean(_message(exc)) or type(exc).__name__}", call.line
            )
        if len(circuit.data) > self.limits.max_operations:
            raise RequestTooLarge(
                f"{self.where.at(call.line)}the circuit has more operations than allowed",
                requested=len(circuit.data),
                allowed=self.limits.max_operations,
            )

    def integer(self, node: ast.expr, env: dict[str, int], line: int) -> int:
        value = self.number(node, env, line)
        if not isinstance(value, int):
            self.where.fail(f"expected an integer, got {value!r}", line)
        return value

    def value(self, node: ast.expr, env: dict[str, int], line: int) -> _Value:
        if isinstance(node, ast.List | ast.Tuple):
            return [self.number(element, env, line) for element in node.elts]
        return self.number(node, env, line)

    def number(self, node: ast.expr, env: dict[str, int], line: int) -> _Number:
        line = getattr(node, "lineno", line)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return self.checked(node.value, line)
        if isinstance(node, ast.Name):
            return env.get(node.id, math.pi)
        if isinstance(node, ast.Attribute):
            return math.pi
        if isinstance(node, ast.UnaryOp):
            operand = self.number(node.operand, env, line)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left = self.number(node.left, env, line)
            right = self.number(node.right, env, line)
            return self.checked(self.arithmetic(node.op, left, right, line), line)
        raise AssertionError(f"unchecked node {type(node).__name__}")  # the compiler refused it

    def arithmetic(self, op: ast.operator, left: _Number, right: _Number, line: int) -> object:
        symbol = _OPERATORS[type(op)]
        if symbol == "**" and isinstance(right, int) and abs(right) > 64:
            self.where.fail("exponents may be at most 64", line)
        try:
            if symbol == "+":
                return left + right
            if symbol == "-":
                return left - right
            if symbol == "*":
                return left * right
            if symbol == "/":
                return left / right
            if symbol == "//":
                return left // right
            if symbol == "%":
                return left % right
            return left**right
        except ZeroDivisionError:
            self.where.fail("division by zero", line)
        except (OverflowError, ValueError):
            self.where.fail("the arithmetic overflows", line)

    def checked(self, value: object, line: int) -> _Number:
        if type(value) is int:
            if abs(value) > _MAX_NUMBER:
                self.where.fail(f"numbers may be at most {_MAX_NUMBER:.0e} in size", line)
            return value
        if type(value) is float and math.isfinite(value):
            return value
        self.where.fail("the arithmetic does not give a finite real number", line)
