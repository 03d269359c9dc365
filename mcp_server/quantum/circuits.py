"""Turning what an agent submits into a Qiskit `QuantumCircuit`, safely and with clear errors.

Three source languages are accepted:

- OpenQASM 2 (```` ```qasm ````, `qasm2`, `openqasm`, `openqasm2`), read by `qiskit.qasm2.loads`;
- OpenQASM 3 (```` ```qasm3 ````, `openqasm3`), read as `qiskit.qasm3.loads` does: `openqasm3.parse`
  then `qiskit_qasm3_import.convert` (called separately, to place errors qiskit reports without a line);
- a small, fixed subset of Qiskit Python (```` ```qiskit ````), read by a restricted interpreter over
  Python's `ast` - the text is never executed, imported, compiled or evaluated by Python.

A ```` ```qasm ```` or ```` ```openqasm ```` block, and raw text without a language, is read by its
`OPENQASM 2.x;` / `OPENQASM 3.x;` header.

Rules (the OpenQASM ones are `qasm_guard`'s, the qiskit subset is `qiskit_subset`'s; both modules
say exactly what they accept):

- Size: the text is at most `max_bytes` (UTF-8); OpenQASM 3 at most `max_qasm3_bytes`, because the
  reference OpenQASM 3 parser (ANTLR, pure Python) reads only about 6-20 kB a second.
- Before any parser sees OpenQASM text, `qasm_guard.precheck_qasm` checks its tokens: includes,
  constructs the simulator cannot run or bound, bracket nesting, register sizes and an upper bound
  on the operations the parser will create.
- After parsing, the operations the circuit really runs - counting every iteration of a `for` loop and
  the bodies of custom gates - must stay within `max_operations`; the circuit must have no free
  parameters, and every operation must be simulable (no opaque gates, no `while`, no `box`).

A circuit without any measurement gets `measure_all()` appended (`measured_all_added`), so that a
simulator returns counts. Errors are `InvalidDocument` whose `line` is the line in the enclosing
document (the parser's own explanation is kept, tracebacks and paths are not), or `RequestTooLarge`.

In a document, the circuit is the one code block in `## Code_Blocks` whose fence language is one of
`CIRCUIT_LANGUAGES`; other blocks (python, json, ...) are ignored and never executed.

This module holds the entry points (`load_text`, `load_document`, `looks_like_maml`, `Circuit`),
the choice of block and language, and the checks after parsing (`_finish`, `_Expansion`). It does
not hold the front ends: OpenQASM is `qasm_guard`, the ```` ```qiskit ```` subset is
`qiskit_subset`, and the limits and error placement they share are `circuit_limits`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp_server.errors import InvalidDocument, RequestTooLarge
from mcp_server.quantum.circuit_limits import MAX_BYTES, MAX_NESTING, Limits, Where
from mcp_server.quantum.qasm_guard import parse_qasm2, parse_qasm3, precheck_qasm
from mcp_server.quantum.qiskit_subset import compile_program, run_program

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


# --------------------------------------------------------------------------------------------------
# Public entry points


def load_text(
    text: str,
    *,
    language: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_operations: int = 100_000,
    line_offset: int = 0,
    max_qubits_declared: int = 1024,
    max_qasm3_bytes: int = 32_768,
) -> Circuit:
    """Parse and check one circuit source.

    `language` is "openqasm2", "openqasm3", "qiskit", a key of `CIRCUIT_LANGUAGES`, or None to read
    the OpenQASM header. `line_offset` is the number of document lines before the source's first line.
    """
    limits = Limits(max_bytes, max_operations, max_qubits_declared, max_qasm3_bytes)
    return _load(text, language, limits, Where(line_offset, None))


def load_document(
    document: MamlDocument,
    *,
    max_operations: int = 100_000,
    max_qubits_declared: int = 1024,
    max_qasm3_bytes: int = 32_768,
) -> Circuit:
    """The circuit of a MAML document: its one circuit block in `## Code_Blocks`."""
    block = _circuit_block(document)
    limits = Limits(MAX_BYTES, max_operations, max_qubits_declared, max_qasm3_bytes)
    language = block.language.lower()
    return _load(
        block.code,
        None if language in _BY_HEADER else CIRCUIT_LANGUAGES[language],
        limits,
        Where(block.line, _CODE_BLOCKS),
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


def _resolve_language(text: str, language: str | None, where: Where, generic_qasm: bool) -> str:
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
    text: str, language: str | None, limits: Limits, where: Where, *, generic_qasm: bool = False
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
        circuit = run_program(compile_program(text, where), limits, where)
    elif resolved == "openqasm3":
        if len(data) > limits.max_qasm3_bytes:
            raise RequestTooLarge(
                "OpenQASM 3 text is larger than allowed (its parser is slow; OpenQASM 2 may be longer)",
                requested=len(data),
                allowed=limits.max_qasm3_bytes,
            )
        precheck_qasm(text, 3, limits, where)
        circuit = parse_qasm3(text, where)
    else:
        precheck_qasm(text, 2, limits, where)
        circuit = parse_qasm2(text, where)
    return _finish(circuit, resolved, digest, limits, where)


def _finish(circuit: QuantumCircuit, language: str, digest: str, limits: Limits, where: Where) -> Circuit:
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

    def __init__(self, limits: Limits, where: Where) -> None:
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
            if depth >= MAX_NESTING:
                self._where.fail(f"custom gates are nested more than {MAX_NESTING} levels deep")
            definition = getattr(op, "definition", None)
            if definition is None:
                self._where.fail(f"'{op.name}' has no definition (an opaque gate); a simulator cannot run it")
            self._memo[key] = max(1, self.circuit(definition, depth + 1))
        return self._memo[key]

    def _control(self, op: Any, depth: int) -> int:
        if depth >= MAX_NESTING:
            self._where.fail(f"control flow is nested more than {MAX_NESTING} levels deep")
        bodies = sum(self.circuit(block, depth + 1) for block in op.blocks)
        if op.name == "for_loop":
            return 1 + _length(op.params[0]) * bodies
        if op.name in ("if_else", "switch_case"):
            return 1 + bodies
        if op.name == "while_loop":
            self._where.fail("while loops are not allowed: their length cannot be bounded; use a for loop")
        self._where.fail(f"'{op.name}' is not supported by the simulator")
