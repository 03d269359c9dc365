"""The OpenQASM 2 and 3 front end: checks on the tokens before any parser sees the text, then the
parsers themselves (`qiskit.qasm2.loads`; `openqasm3.parse` + `qiskit_qasm3_import.convert`) with
their errors mapped to lines of the enclosing document.

The checks (`precheck_qasm`), all made on the tokens:

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
  computed from the tokens (`_QasmEstimate`) and must stay within `max_operations`.

`parse_qasm2` / `parse_qasm3` then read the checked text into a `QuantumCircuit`; a parser error
becomes an `InvalidDocument` at its line (the parser's explanation is kept, tracebacks and paths are
not).

Does not hold: choosing the language or the block, the byte-size checks, or the checks after
parsing (measurements, free parameters, the operations really run), which stay in `circuits`; nor
the ```` ```qiskit ```` subset (`qiskit_subset`). qiskit and the OpenQASM 3 parser are imported
inside the parse functions, on the first call, never when this module is imported.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp_server.errors import InvalidDocument, MacroslowError, RequestTooLarge
from mcp_server.quantum.circuit_limits import (
    MAX_LOOP_BOUND,
    MAX_NESTING,
    Limits,
    Where,
    clean_message,
    exception_message,
)

if TYPE_CHECKING:
    from qiskit import QuantumCircuit


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


def precheck_qasm(text: str, version: int, limits: Limits, where: Where) -> None:
    tokens = _tokens(text, version)
    _check_nesting(tokens, where)  # first: it bounds the cost of the bracket matching below
    _check_statements(tokens, version, where)
    _QasmEstimate(tokens, version, limits, where).run()


def _check_nesting(tokens: list[_Token], where: Where) -> None:
    depth = 0
    for token in tokens:
        if token.text in _OPENERS:
            depth += 1
            if depth > MAX_NESTING:
                where.fail(f"brackets are nested more than {MAX_NESTING} deep", token.line)
        elif token.text in _CLOSERS:
            depth = max(0, depth - 1)


def _check_statements(tokens: list[_Token], version: int, where: Where) -> None:
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


def _check_include(tokens: list[_Token], index: int, version: int, where: Where) -> None:
    allowed = _ALLOWED_INCLUDE[version]
    name = tokens[index + 1] if index + 1 < len(tokens) else None
    if name is None or name.kind != "str" or name.text[1:-1] != allowed:
        shown = name.text if name is not None else "nothing"
        where.fail(
            f'include {shown} is not allowed; OpenQASM {version} may only include "{allowed}"',
            tokens[index].line,
        )


def _check_for(tokens: list[_Token], index: int, where: Where) -> None:
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
        if token.kind == "num" and _PLAIN_INT.fullmatch(token.text) and int(token.text) <= MAX_LOOP_BOUND:
            continue
        if token.text not in ("+", "-", ":", ",", "(", ")"):
            where.fail(
                f"for-loop ranges may only use integer literals up to {MAX_LOOP_BOUND:.0e}, + and -, "
                f"not {token.text!r}",
                token.line,
            )


def _check_modifiers(tokens: list[_Token], index: int, where: Where) -> int:
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

    def __init__(self, tokens: list[_Token], version: int, limits: Limits, where: Where) -> None:
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


def parse_qasm2(text: str, where: Where) -> QuantumCircuit:
    from qiskit import qasm2

    try:
        # An empty include path: "qelib1.inc" is built in, and nothing is ever read from disk.
        # LEGACY_CUSTOM_INSTRUCTIONS: the gates Qiskit itself writes into QASM 2 (sx, rzx, ...) resolve
        # to Qiskit's own gates, so circuits exported by `qasm2.dumps` load back.
        return qasm2.loads(text, include_path=(), custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    except MacroslowError:
        raise
    except Exception as exc:
        message = exception_message(exc)
        match = _QASM2_POSITION.match(message)
        if match is None:
            where.fail(f"OpenQASM 2: {clean_message(message)}")
        detail = f"OpenQASM 2 (column {int(match['column']) + 1}): {clean_message(match['message'])}"
        raise InvalidDocument(detail, field=where.field, line=where.line(int(match["line"]))) from exc


def parse_qasm3(text: str, where: Where) -> QuantumCircuit:
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
        message = exception_message(error)
        for pattern in _QASM3_POSITIONS:
            match = pattern.match(message)
            if match:
                return int(match["line"]), int(match["column"]), clean_message(match["message"])
        token = getattr(error, "offendingToken", None)
        if token is not None and getattr(token, "line", None) is not None:
            if getattr(token, "type", None) == -1:
                return int(token.line), int(token.column), "unexpected end of input (a missing '}' or ';'?)"
            hint = " (a missing ';' at the end of the line before?)" if token.column == 0 else ""
            return (
                int(token.line),
                int(token.column),
                f"syntax error at {clean_message(str(token.text))!r}{hint}",
            )
    message = clean_message(exception_message(exc)) or type(exc).__name__
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
