"""The ```` ```qiskit ```` front end: a restricted interpreter for a small, fixed subset of Qiskit
Python, over Python's `ast` - the text is never executed, imported, compiled or evaluated by Python.

`compile_program` checks the syntax tree against the subset into a small program (`_Compiler`,
nothing runs); `run_program` runs that program on a fresh `QuantumCircuit` (`_Runner`), bounding
every loop before it runs and counting every executed statement against `max_operations`.

The subset, exactly:

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

Does not hold: choosing the language or the block, the byte-size check, or the checks after the
circuit is built (measurements, the operations really run), which stay in `circuits`; nor
anything OpenQASM (`qasm_guard`). qiskit is imported inside `run_program`, never when this module is
imported.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp_server.errors import MacroslowError, RequestTooLarge
from mcp_server.quantum.circuit_limits import (
    MAX_NESTING,
    MAX_NUMBER,
    Limits,
    Where,
    clean_message,
    exception_message,
)

if TYPE_CHECKING:
    from qiskit import QuantumCircuit


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


def compile_program(source: str, where: Where) -> _Program:
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        where.fail(f"Python syntax error: {exc.msg}", exc.lineno or 1)
    except (ValueError, RecursionError, MemoryError):
        where.fail("the qiskit block cannot be read as Python (null bytes or too deeply nested)", 1)
    return _Compiler(where).module(tree)


class _Compiler:
    """Checks the syntax tree against the subset; nothing runs here."""

    def __init__(self, where: Where) -> None:
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
        if depth > MAX_NESTING:
            self.where.fail(f"expressions may nest at most {MAX_NESTING} deep", line)
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


def run_program(program: _Program, limits: Limits, where: Where) -> QuantumCircuit:
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

    def __init__(self, name: str, limits: Limits, where: Where) -> None:
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
            reason = clean_message(exception_message(exc)) or type(exc).__name__
            self.where.fail(f"{self.name}.{call.method}(...): {reason}", call.line)
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
            if abs(value) > MAX_NUMBER:
                self.where.fail(f"numbers may be at most {MAX_NUMBER:.0e} in size", line)
            return value
        if type(value) is float and math.isfinite(value):
            return value
        self.where.fail("the arithmetic does not give a finite real number", line)
