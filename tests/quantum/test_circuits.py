"""mcp_server.quantum.circuits: OpenQASM 2/3 and the qiskit subset into checked, runnable circuits."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcp_server.errors import InvalidDocument, RequestTooLarge
from mcp_server.maml.model import MamlDocument
from mcp_server.maml.parser import parse
from mcp_server.quantum import qasm_guard
from mcp_server.quantum.circuits import CIRCUIT_LANGUAGES, Circuit, load_document, load_text, looks_like_maml

BELL2 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0], q[1];
measure q -> c;
"""
GHZ2 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[3];
creg c[3];
h q[0];
cx q[0], q[1];
cx q[1], q[2];
measure q -> c;
"""
BELL3 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""
LOOPS3 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
for int i in [0:1] {
  h q[0];
}
c[0] = measure q[0];
if (c[0]) { x q[1]; } else { h q[1]; }
pow(0.5) @ x q[2];
inv @ ctrl @ s q[1], q[2];
c = measure q;
"""
GHZ_QISKIT = """from qiskit import QuantumCircuit
from math import pi

qc = QuantumCircuit(3, 3)
qc.h(0)
for i in range(2):
    qc.cx(i, i + 1)
qc.measure([0, 1, 2], [0, 1, 2])
"""

DOCUMENT = """---
maml_version: "2.0"
id: "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
type: quantum_workflow
origin: agent://local
title: A test circuit
requires:
  libs: [qiskit, qiskit-aer]
  qubits: 3
  shots: 1024
permissions:
  read: [agent://*]
  write: [agent://local]
  execute: [agent://local]
---
# A test circuit

## Intent
Run a circuit.

## Code_Blocks
{blocks}
## Input_Schema
```json
{{"type": "object"}}
```

## History
- 2025-10-18T10:00:00Z: created.
"""


def fence(language: str, code: str) -> str:
    return f"```{language}\n{code}```\n"


def document(*blocks: str, template: str = DOCUMENT) -> MamlDocument:
    return parse(template.format(blocks="\n".join(blocks)))


def fence_line(doc: MamlDocument, language: str) -> int:
    """The 1-based line of the first fence opening a `language` block."""
    return doc.text.splitlines().index(f"```{language}") + 1


def invalid(call: Callable[[], Any]) -> InvalidDocument:
    with pytest.raises(InvalidDocument) as info:
        call()
    return info.value


def too_large(call: Callable[[], Any]) -> RequestTooLarge:
    with pytest.raises(RequestTooLarge) as info:
        call()
    return info.value


@pytest.fixture
def no_parsers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if text reaches a QASM parser: the checks before parsing must refuse it."""
    import qiskit.qasm2
    import qiskit.qasm3

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the text reached a parser")

    monkeypatch.setattr(qiskit.qasm2, "loads", forbidden)
    monkeypatch.setattr(qiskit.qasm3, "loads", forbidden)


# --------------------------------------------------------------------------------------------------
# Parsing what is valid


def test_languages() -> None:
    assert CIRCUIT_LANGUAGES == {
        "qasm": "openqasm2",
        "qasm2": "openqasm2",
        "openqasm": "openqasm2",
        "openqasm2": "openqasm2",
        "qasm3": "openqasm3",
        "openqasm3": "openqasm3",
        "qiskit": "qiskit",
    }


def test_qasm2_bell() -> None:
    result = load_text(BELL2)
    assert result.language == "openqasm2"
    assert (result.qubits, result.clbits, result.depth) == (2, 2, 3)
    assert result.gate_counts == {"cx": 1, "h": 1, "measure": 2}
    assert list(result.gate_counts) == sorted(result.gate_counts)
    assert all(type(v) is int for v in result.gate_counts.values())
    assert not result.measured_all_added
    assert result.line == 1
    assert result.digest == "sha256:" + hashlib.sha256(BELL2.encode()).hexdigest()


def test_qasm2_ghz() -> None:
    result = load_text(GHZ2)
    assert (result.qubits, result.clbits, result.depth) == (3, 3, 4)
    assert result.gate_counts == {"cx": 2, "h": 1, "measure": 3}


def test_qasm3_bell() -> None:
    result = load_text(BELL3)
    assert result.language == "openqasm3"
    assert (result.qubits, result.clbits, result.depth) == (2, 2, 3)
    assert result.gate_counts == {"cx": 1, "h": 1, "measure": 2}
    assert not result.measured_all_added


def test_qasm3_control_flow_and_standard_modifiers() -> None:
    result = load_text(LOOPS3)
    assert result.gate_counts["for_loop"] == 1
    assert result.gate_counts["if_else"] == 1
    assert "unitary" in result.gate_counts  # pow(0.5) @ x


def test_language_from_the_header_after_comments() -> None:
    text = "// a comment\n/* another */\n" + BELL3
    assert load_text(text).language == "openqasm3"
    assert load_text(BELL3, language="qasm").language == "openqasm3"
    assert load_text(BELL2, language="openqasm").language == "openqasm2"


def test_language_given_explicitly() -> None:
    assert load_text(BELL2, language="openqasm2").language == "openqasm2"
    assert load_text(BELL3, language="qasm3").language == "openqasm3"
    assert load_text(GHZ_QISKIT, language="qiskit").language == "qiskit"


def test_no_header_asks_for_one() -> None:
    error = invalid(lambda: load_text("qreg q[1];\nh q[0];\n"))
    assert error.line == 1
    assert "OPENQASM 2.0;" in error.message


def test_header_contradicting_the_language() -> None:
    error = invalid(lambda: load_text(BELL3, language="openqasm2"))
    assert "OPENQASM 3" in error.message


@pytest.mark.parametrize("text", ["OPENQASM 4.0;\nqubit q;\n", "OPENQASM 1;\n"])
def test_unsupported_version(text: str) -> None:
    assert "not supported" in invalid(lambda: load_text(text)).message


def test_unknown_language() -> None:
    assert "unknown circuit language" in invalid(lambda: load_text(BELL2, language="cirq")).message


def test_no_measurement_gets_measure_all() -> None:
    result = load_text('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0];\ncx q[0], q[1];\n')
    assert result.measured_all_added
    assert result.gate_counts == {"barrier": 1, "cx": 1, "h": 1, "measure": 2}
    assert result.clbits == 2


def test_a_measurement_inside_control_flow_counts() -> None:
    text = (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\nbit[1] c;\n'
        "for int i in [0:1] { c[0] = measure q[0]; }\n"
    )
    assert not load_text(text).measured_all_added


def test_line_offset_sets_line() -> None:
    assert load_text(BELL2, line_offset=20).line == 21


# --------------------------------------------------------------------------------------------------
# Errors and their lines


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (BELL2.replace("h q[0];", "h q[0]"), 6, "needed ';'"),  # noticed at the next statement
        (BELL2.replace("cx q[0], q[1];", "cx q[0], q[5];"), 6, "out-of-range"),
        (BELL2.replace("h q[0];", "foo q[0];"), 5, "not defined"),
        (BELL2 + "qreg q[2];\n", 8, "already defined"),
    ],
)
def test_malformed_qasm2(text: str, line: int, words: str) -> None:
    error = invalid(lambda: load_text(text))
    assert error.line == line
    assert words in error.message
    assert "OpenQASM 2" in error.message
    assert "Traceback" not in error.message and "<input>" not in error.message
    assert invalid(lambda: load_text(text, line_offset=100)).line == 100 + line


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (BELL3.replace("h q[0];", "h q[0;"), 5, "syntax error"),
        (BELL3.replace("h q[0];", "h q[0]"), 6, "missing ';'"),  # the parser notices at 'cx'
        (BELL3.replace("h q[0];", "foo q[0];"), 5, "not defined"),
        # qiskit raises these without a position; the failing statement is found by bisection
        (BELL3.replace("cx q[0], q[1];", "cx q[0], q[1], q[0];"), 6, "does not match"),
        (BELL3.replace("cx q[0], q[1];", "cx q[0], q[0];"), 6, "duplicate"),
        (BELL3.replace("cx q[0], q[1];", "cx q[0], q[7];"), 6, "out of range"),
        (BELL3.replace("cx q[0], q[1];", "for int i in [0:1] {\n  rx(0.5) q[i];\n}"), 6, "index"),
        (BELL3 + "for int i in [0:2] {\n h q[0];\n", 10, "end of input"),
        (BELL3.replace("h q[0];", "h q[0]; ?"), 5, "token recognition error"),
    ],
)
def test_malformed_qasm3(text: str, line: int, words: str) -> None:
    error = invalid(lambda: load_text(text))
    assert error.line == line, error.message
    assert words in error.message
    assert "OpenQASM 3" in error.message
    assert "Traceback" not in error.message and "File " not in error.message
    assert invalid(lambda: load_text(text, line_offset=7)).line == 7 + line


def test_malformed_qasm_in_a_document() -> None:
    broken2 = GHZ2.replace("cx q[1], q[2];", "cx q[1], q[2]")  # the 7th line lacks ';' -> noticed on the 8th
    doc = document(fence("qasm", broken2))
    error = invalid(lambda: load_document(doc))
    assert error.line == fence_line(doc, "qasm") + 8
    assert error.field == "Code_Blocks"

    broken3 = BELL3.replace("h q[0];", "undefined_gate q[0];")  # the 5th line
    doc = document(fence("openqasm3", broken3))
    error = invalid(lambda: load_document(doc))
    assert error.line == fence_line(doc, "openqasm3") + 5
    assert "undefined_gate" in error.message


def test_qiskit_syntax_error_line() -> None:
    error = invalid(lambda: load_text("qc = QuantumCircuit(1)\nqc.h(0\n", language="qiskit", line_offset=3))
    assert error.line == 5
    assert "syntax error" in error.message


# --------------------------------------------------------------------------------------------------
# Includes


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('OPENQASM 2.0;\ninclude "/etc/passwd";\n', 2),
        ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\ninclude "../x.inc";\n', 4),
        ('OPENQASM 2.0;\ninclude "stdgates.inc";\n', 2),
        ("OPENQASM 2.0;\ninclude qelib1;\n", 2),
        ('OPENQASM 3.0;\ninclude "/etc/passwd";\n', 2),
        ('OPENQASM 3.0;\ninclude "qelib1.inc";\n', 2),
        ("OPENQASM 3.0;\n/* ok */ include '../stdgates.inc';\n", 2),
    ],
)
def test_refused_includes(text: str, line: int, no_parsers: None) -> None:
    error = invalid(lambda: load_text(text))
    assert error.line == line
    assert "include" in error.message and "not allowed" in error.message


def test_no_include_file_is_read_even_past_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the include check switched off, qiskit still reads nothing: its include path is empty."""
    (tmp_path / "evil.inc").write_text("gate evil a { U(0,0,0) a; }\n")
    monkeypatch.chdir(tmp_path)  # qiskit's default include path is "."
    text = 'OPENQASM 2.0;\ninclude "evil.inc";\nqreg q[1];\nevil q[0];\n'
    assert invalid(lambda: load_text(text)).line == 2
    monkeypatch.setattr(qasm_guard, "_check_include", lambda *args: None)
    error = invalid(lambda: load_text(text))
    assert "unable to find" in error.message
    assert error.line == 2


# --------------------------------------------------------------------------------------------------
# Refused constructs


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("OPENQASM 2.0;\nqreg q[1];\nopaque magic a;\nmagic q[0];\n", 3, "opaque"),
        ("OPENQASM 3.0;\nqubit q;\nbit c;\nwhile (c) { c = measure q; }\n", 4, "while"),
        ('OPENQASM 3.0;\ndefcalgrammar "openpulse";\n', 2, "pulse"),
        ("OPENQASM 3.0;\ndefcal x $0 { }\n", 2, "pulse"),
        ("OPENQASM 3.0;\ncal { }\n", 2, "pulse"),
        ("OPENQASM 3.0;\nextern f(int) -> int;\n", 2, "extern"),
        ("OPENQASM 3.0;\ndef f(qubit a) { }\n", 2, "subroutine"),
        ('OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float t;\nqubit q;\nrx(t) q;\n', 3, "input"),
        ("OPENQASM 3.0;\nqubit[2] q;\nlet a = q[0:1];\n", 3, "alias"),
        ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nbox { h q; }\n', 4, "box"),
        ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\n#pragma x\nh q;\n', 4, "pragma"),
        (
            'OPENQASM 3.0;\ninclude "stdgates.inc";\ngate g a { h a; }\nqubit q;\ninv @ g q;\n',
            5,
            "modifiers",
        ),
        (
            'OPENQASM 3.0;\ninclude "stdgates.inc";\ngate g a { h a; }\nqubit[2] q;\n'
            "ctrl @ pow(2) @ g q[0], q[1];\n",
            5,
            "modifiers",
        ),
        ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nctrl(1+1) @ x q[0], q[1];\n', 4, "ctrl(n)"),
        ('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nctrl(65) @ x q[0], q[1];\n', 4, "ctrl(n)"),
        ("OPENQASM 3.0;\nqubit q;\nfor for for for for for for for for;\n", 3, "for loops"),
        ("OPENQASM 3.0;\nqubit q;\nfor int[1+1+1+1+1] i in [0:1] { }\n", 3, "for loops"),
        ("OPENQASM 3.0;\nqubit q;\n" + "(" * 40 + "\n", 3, "nested"),
        ("OPENQASM 3.0;\ngate g a { qubit[100] x; }\nqubit[2*3] q;\n", 3, "plain integers"),
        ("OPENQASM 3.0;\nqubit[2*3] q;\n", 2, "plain integers"),
        ("OPENQASM 3.0;\nqubit[1_000] q;\n", 2, "plain integers"),
    ],
)
def test_refused_qasm_constructs(text: str, line: int, words: str, no_parsers: None) -> None:
    error = invalid(lambda: load_text(text))
    assert error.line == line, error.message
    assert words in error.message


@pytest.mark.parametrize(
    "header",
    [
        "[0:99999999999999999999999]",  # longer than sys.maxsize: qiskit would abort the process
        "[-4611686018427387904:4611686018427387904]",
        "[0:1000000000*1000000000*1000000000]",
        "{1, 99999999999999999999999}",
    ],
)
def test_qasm3_loop_ranges_are_small_by_syntax(header: str, no_parsers: None) -> None:
    text = f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nfor int i in {header} {{ h q; }}\n'
    error = invalid(lambda: load_text(text))
    assert error.line == 4
    assert "for-loop ranges" in error.message


def test_free_parameters_refused_after_parsing() -> None:
    """Defense in depth: even if 'input' were let through, the unbound parameter is refused."""
    text = 'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float theta;\nqubit q;\nrx(theta) q;\n'
    assert "input" in invalid(lambda: load_text(text)).message


# --------------------------------------------------------------------------------------------------
# Sizes


def test_oversized_text_refused_before_parsing(no_parsers: None) -> None:
    error = too_large(lambda: load_text(BELL2 + "// padding\n" * 100, max_bytes=len(BELL2)))
    assert error.details["allowed"] == len(BELL2)
    assert error.details["requested"] == len(BELL2) + 1100
    too_large(lambda: load_text("x" * 2_000_000))  # not even valid: the size is checked first


def test_size_counts_utf8_bytes() -> None:
    text = BELL2 + "// é\n"
    too_large(lambda: load_text(text, max_bytes=len(text)))
    assert load_text(text, max_bytes=len(text.encode())).qubits == 2


def test_qasm3_has_its_own_smaller_cap(no_parsers: None) -> None:
    text = BELL3 + "// padding\n" * 4000
    error = too_large(lambda: load_text(text))
    assert error.details["allowed"] == 32_768
    error = too_large(lambda: load_text(BELL3, max_qasm3_bytes=50))
    assert error.details["requested"] == len(BELL3)


@pytest.mark.parametrize(
    "text",
    [
        "OPENQASM 2.0;\nqreg q[100000000];\n",
        "OPENQASM 2.0;\nqreg a[1000];\nqreg b[1000];\n",
        "OPENQASM 2.0;\ncreg c[100000000];\n",
        "OPENQASM 3.0;\nqubit[100000000] q;\n",
        "OPENQASM 3.0;\nbit[100000000] c;\n",
        "OPENQASM 3.0;\nqreg q[100000000];\n",
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nh $100000000;\n',
        "OPENQASM 3.0;\n/* a comment */ qubit[100000000] q; // another\n",
        "OPENQASM 3.0;\n@annotation /*\nqubit[100000000] q;\n// */\n",  # ANTLR: the annotation ends the line
        "OPENQASM 3.0;\ngate g a { qubit[100000000] x; }\n",  # declarations count wherever they are
        "OPENQASM 3.0;\nqubit q;\nfor int i in [0:1] qubit[100000000] x;\n",
    ],
)
def test_huge_registers_refused_before_parsing(text: str, no_parsers: None) -> None:
    error = too_large(lambda: load_text(text))
    assert error.details["allowed"] == 1024


def test_register_bound_is_configurable() -> None:
    too_large(lambda: load_text(GHZ2, max_qubits_declared=2))
    assert load_text(GHZ2, max_qubits_declared=3).qubits == 3


def test_qiskit_huge_circuit_refused() -> None:
    error = too_large(lambda: load_text("qc = QuantumCircuit(100000000)\n", language="qiskit"))
    assert error.details == {"requested": 100000000, "allowed": 1024}


def test_too_many_operations() -> None:
    text = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\n' + "h q[0];\n" * 20
    error = too_large(lambda: load_text(text, max_operations=10))
    assert error.details["allowed"] == 10
    assert load_text(text, max_operations=22).gate_counts["h"] == 20  # and the measurement and barrier added
    too_large(lambda: load_text(text, max_operations=21))


def test_broadcasts_counted_before_parsing(no_parsers: None) -> None:
    text = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1000];\n' + "h q;\n" * 200
    error = too_large(lambda: load_text(text))
    assert error.details["requested"] > 100_000


def test_nested_custom_gates_counted_before_parsing(no_parsers: None) -> None:
    """Each gate calls the one before twice: 2**40 operations from a few lines."""
    gates = "".join(f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}\n" for i in range(1, 41))
    text = f'OPENQASM 2.0;\ninclude "qelib1.inc";\ngate g0 a {{ h a; }}\n{gates}qreg q[1];\ng40 q[0];\n'
    too_large(lambda: load_text(text))
    too_large(lambda: load_text(text.replace("OPENQASM 2.0", "OPENQASM 3.0").replace("qelib1", "stdgates")))


def test_nested_custom_gates_counted_after_parsing() -> None:
    gates = "".join(f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}\n" for i in range(1, 8))
    text = f'OPENQASM 2.0;\ninclude "qelib1.inc";\ngate g0 a {{ h a; }}\n{gates}qreg q[1];\ng7 q[0];\n'
    assert load_text(text, max_operations=200).gate_counts["g7"] == 1  # 128 h, plus measure and barrier
    error = too_large(lambda: load_text(text, max_operations=129))
    assert error.details["requested"] == 128 + 2


def test_qasm3_loop_iterations_counted() -> None:
    text = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nfor int i in [0:999999999] { h q; }\n'
    error = too_large(lambda: load_text(text))
    assert error.details["requested"] > 10**9


def test_qiskit_loop_refused_before_it_runs() -> None:
    text = "qc = QuantumCircuit(1)\nfor i in range(10**12):\n    qc.h(0)\n"
    error = too_large(lambda: load_text(text, language="qiskit"))
    assert "line 2" in error.message
    assert error.details["requested"] == 10**12


def test_qiskit_nested_loops_bounded() -> None:
    text = "qc = QuantumCircuit(1)\nfor i in range(1000):\n    for j in range(1000):\n        qc.h(0)\n"
    too_large(lambda: load_text(text, language="qiskit"))
    text = "qc = QuantumCircuit(1)\nfor i in range(10**5):\n    for j in range(0):\n        qc.h(0)\n"
    too_large(lambda: load_text(text, language="qiskit", max_operations=1000))  # empty iterations count


# --------------------------------------------------------------------------------------------------
# The qiskit subset


def test_qiskit_ghz_matches_qasm() -> None:
    from qiskit import qasm2

    built = load_text(GHZ_QISKIT, language="qiskit")
    parsed = load_text(GHZ2)
    assert built.language == "qiskit"
    assert built.gate_counts == parsed.gate_counts
    assert (built.qubits, built.clbits, built.depth) == (parsed.qubits, parsed.clbits, parsed.depth)
    assert qasm2.dumps(built.circuit) == qasm2.dumps(parsed.circuit)


def test_qiskit_arithmetic_and_constants() -> None:
    text = """import math
import numpy as np
import qiskit
qc = qiskit.QuantumCircuit(2)
for i in range(0, 4, 2):
    qc.rx(math.pi / 2 ** (i + 1), 0)
qc.rz(-np.pi % 1, 1)
qc.u(pi, numpy.pi, 7 // 2, 1)
qc.measure_all()
"""
    result = load_text(text, language="qiskit")
    assert result.gate_counts == {"barrier": 1, "measure": 2, "rx": 2, "rz": 1, "u": 1}
    assert not result.measured_all_added
    angles = [float(i.operation.params[0]) for i in result.circuit.data if i.operation.name == "rx"]
    assert angles == pytest.approx([3.141592653589793 / 2, 3.141592653589793 / 8])


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("import os\nqc = QuantumCircuit(1)\n", 1, "imports"),
        ("from os import system\nqc = QuantumCircuit(1)\n", 1, "imports"),
        ("import numpy as os\nqc = QuantumCircuit(1)\n", 1, "imports"),
        ("qc = QuantumCircuit(1)\nqc.h(0)\nopen('x', 'w')\n", 3, "open()"),
        ("qc = QuantumCircuit(1)\n__import__('os').system('x')\n", 2, "only methods of the circuit"),
        ("qc = QuantumCircuit(1)\nqc.__class__\n", 2, "bare expression"),
        ("qc = QuantumCircuit(1)\nqc.__class__.__bases__[0]()\n", 2, "only methods of the circuit"),
        ("qc = QuantumCircuit(1)\nqc.__init__(5)\n", 2, "not an allowed circuit method"),
        ("qc = QuantumCircuit(1)\nexec('import os')\n", 2, "exec()"),
        ("qc = QuantumCircuit(1)\neval('1')\n", 2, "eval()"),
        ("qc = QuantumCircuit(1)\nwhile True:\n    qc.h(0)\n", 2, "while"),
        ("qc = QuantumCircuit(1)\ndef f():\n    qc.h(0)\n", 2, "function"),
        ("qc = QuantumCircuit(1)\nclass A:\n    pass\n", 2, "class"),
        ("qc = QuantumCircuit(1)\nf = lambda: 0\n", 2, "assignment"),
        ("qc = QuantumCircuit(1)\nqc.rx(lambda: 0, 0)\n", 2, "lambda"),
        ("qc = QuantumCircuit(1)\nqc.unitary([[1, 0], [0, 1]], [0])\n", 2, "not an allowed circuit method"),
        ("qc = QuantumCircuit(1)\nqc.h(0); os.system('x')\n", 2, "os.system"),
        ("qc = QuantumCircuit(1)\nqc.h(os.sep)\n", 2, "os.sep"),
        ("qc = QuantumCircuit(1)\nqc.h(0)\nresult = qc\n", 3, "assignment"),
        ("qc = QuantumCircuit(1)\nqc.h(0)\nqc\n", 3, "bare expression"),
        ("qc = QuantumCircuit(1)\nqc.h([i for i in range(1)])\n", 2, "comprehension"),
        ("qc = QuantumCircuit(1)\nqc.rx(f'{1}', 0)\n", 2, "f-string"),
        ("qc = QuantumCircuit(1)\nqc.rx('1', 0)\n", 2, "literals"),
        ("qc = QuantumCircuit(1)\nqc.h(True)\n", 2, "literals"),
        ("qc = QuantumCircuit(1)\nqc.h(x)\n", 2, "unknown name"),
        ("qc = QuantumCircuit(1)\nqc.h(q[0])\n", 2, "indexing"),
        ("qc = QuantumCircuit(1)\nqc.h(*[0])\n", 2, "Starred"),
        ("qc = QuantumCircuit(1)\nqc.h(qubit=0)\n", 2, "keyword"),
        ("qc = QuantumCircuit(1)\nfor i in [0, 1]:\n    qc.h(0)\n", 2, "range"),
        ("qc = QuantumCircuit(1)\nfor i in range(2):\n    x = 1\n", 3, "assignment"),
        ("qc = QuantumCircuit(1)\nfor qc in range(2):\n    qc.h(0)\n", 2, "loop variable"),
        ("qc = QuantumCircuit(1)\nif True:\n    qc.h(0)\n", 2, "'if'"),
        ("qc = QuantumCircuit(1)\nwith open('x') as f:\n    qc.h(0)\n", 2, "'with'"),
        ("qc = QuantumCircuit(1)\ntry:\n    qc.h(0)\nexcept Exception:\n    pass\n", 2, "'try'"),
        ("qc = QuantumCircuit(1)\nimport os\n", 2, "imports"),
        ("qc = QuantumCircuit(1)\nqc2 = QuantumCircuit(1)\n", 2, "only one assignment"),
        ("qc.h(0)\nqc = QuantumCircuit(1)\n", 1, "create the circuit first"),
        ("qc = QuantumCircuit(1)\nqc.rx(2 ** 1000, 0)\n", 2, "exponents"),
        ("qc = QuantumCircuit(1)\nqc.rx(10 ** 19, 0)\n", 2, "at most"),
        ("qc = QuantumCircuit(1)\nqc.rx(1 / 0, 0)\n", 2, "division by zero"),
        ("qc = QuantumCircuit(1)\nqc.rx((-8) ** 0.5, 0)\n", 2, "finite real"),
        ("qc = QuantumCircuit(1)\nqc.rx(1e308 * 10, 0)\n", 2, "finite real"),
        ("qc = QuantumCircuit(1)\nfor i in range(0, 5, 0):\n    qc.h(0)\n", 2, "zero"),
        ("qc = QuantumCircuit(1)\nqc.h(5)\n", 2, "qc.h(...)"),
        ("qc = QuantumCircuit(2)\nqc.cx(0, 0)\n", 2, "qc.cx(...)"),
        ("qc = QuantumCircuit(1.5)\n", 1, "integer"),
        ("x = 5\n", 1, "QuantumCircuit"),
        ("import qiskit\n", 1, "never creates"),
    ],
)
def test_refused_qiskit_constructs(body: str, line: int, words: str) -> None:
    error = invalid(lambda: load_text(body, language="qiskit", line_offset=10))
    assert error.line == 10 + line, error.message
    assert words in error.message


def test_nothing_in_a_qiskit_block_executes(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    attempts = [
        f"qc = QuantumCircuit(1)\nqc.h(0)\nopen({str(marker)!r}, 'w')\n",
        f"qc = QuantumCircuit(1)\n__import__('os').system('touch {marker}')\n",
        f"qc = QuantumCircuit(1)\nqc.h(0); __import__('pathlib').Path({str(marker)!r}).touch()\n",
        f"import pathlib\nqc = QuantumCircuit(1)\npathlib.Path({str(marker)!r}).touch()\n",
        f"qc = QuantumCircuit(1)\nfor i in range(1):\n    exec('open({marker!s}, \"w\")')\n",
        f"qc = QuantumCircuit(1)\nqc.h(0)\ndef f():\n    open({str(marker)!r}, 'w')\nf()\n",
    ]
    for text in attempts:
        invalid(lambda text=text: load_text(text, language="qiskit"))
        assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# Documents


def test_the_example_document(example_text: str) -> None:
    doc = parse(example_text)
    result = load_document(doc)
    assert result.language == "openqasm2"
    assert (result.qubits, result.depth) == (3, 4)
    assert result.gate_counts == {"cx": 2, "h": 1, "measure": 3}
    block = next(b for b in doc.code_blocks if b.language == "qasm")
    assert result.line == block.line + 1
    assert result.digest == "sha256:" + hashlib.sha256(block.code.encode()).hexdigest()


@pytest.mark.parametrize(
    ("language", "code", "expected"),
    [
        ("qasm", GHZ2, "openqasm2"),
        ("qasm", BELL3, "openqasm3"),
        ("QASM", GHZ2, "openqasm2"),
        ("openqasm", BELL3, "openqasm3"),
        ("qasm2", GHZ2, "openqasm2"),
        ("openqasm3", BELL3, "openqasm3"),
        ("qasm3", BELL3, "openqasm3"),
        ("qiskit", GHZ_QISKIT, "qiskit"),
    ],
)
def test_document_block_languages(language: str, code: str, expected: str) -> None:
    result = load_document(document(fence(language, code)))
    assert result.language == expected


def test_document_block_marked_against_its_header() -> None:
    doc = document(fence("qasm3", GHZ2))
    error = invalid(lambda: load_document(doc))
    assert error.line == fence_line(doc, "qasm3") + 1


def test_other_blocks_are_ignored_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    python = fence("python", f"open({str(marker)!r}, 'w').write('ran')\n")
    data = fence("json", '{"a": 1}\n')
    result = load_document(document(python, data, fence("qasm", GHZ2)))
    assert result.qubits == 3
    assert not marker.exists()


def test_python_block_only() -> None:
    doc = document(fence("python", "from qiskit import QuantumCircuit\nqc = QuantumCircuit(2)\n"))
    error = invalid(lambda: load_document(doc))
    assert "never executed" in error.message
    assert "qasm" in error.message and "qiskit" in error.message
    assert error.field == "Code_Blocks"


def test_no_circuit_block() -> None:
    error = invalid(lambda: load_document(document(fence("json", "{}\n"))))
    assert "no circuit block" in error.message
    assert error.field == "Code_Blocks"


def test_circuit_block_outside_code_blocks_is_not_used() -> None:
    template = DOCUMENT.replace("## Intent\nRun a circuit.\n", "## Intent\n```qasm\n" + GHZ2 + "```\n")
    doc = document(fence("json", "{}\n"), template=template)
    error = invalid(lambda: load_document(doc))
    assert "outside" in error.message


def test_two_circuit_blocks() -> None:
    doc = document(fence("qasm", GHZ2), fence("qiskit", GHZ_QISKIT))
    lines = [b.line for b in doc.code_blocks if b.language in ("qasm", "qiskit")]
    error = invalid(lambda: load_document(doc))
    assert all(str(line) in error.message for line in lines)
    assert error.field == "Code_Blocks"


def test_qiskit_block_errors_point_into_the_document() -> None:
    doc = document(fence("qiskit", "qc = QuantumCircuit(1)\nqc.h(0)\nimport os\n"))
    error = invalid(lambda: load_document(doc))
    assert error.line == fence_line(doc, "qiskit") + 3


def test_document_limits_are_passed_on() -> None:
    too_large(lambda: load_document(document(fence("qasm", GHZ2)), max_operations=3))
    too_large(lambda: load_document(document(fence("qasm", GHZ2)), max_qubits_declared=2))


# --------------------------------------------------------------------------------------------------
# Odds and ends


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\nmaml_version: '2.0'\n---\n", True),
        ("\ufeff---\n", True),
        ("\n\n  \n---  \nx: 1\n", True),
        ("OPENQASM 2.0;\n---\n", False),
        ("----\n", False),
        ("", False),
        ("# ---\n", False),
    ],
)
def test_looks_like_maml(text: str, expected: bool) -> None:
    assert looks_like_maml(text) is expected


def test_importing_the_module_does_not_import_qiskit() -> None:
    code = "import sys, mcp_server.quantum.circuits; assert 'qiskit' not in sys.modules, 'qiskit imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


SOURCES: list[tuple[str, str | None]] = [
    (BELL2, None),
    (GHZ2, None),
    (BELL3, None),
    (LOOPS3, None),
    (GHZ_QISKIT, "qiskit"),
    ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q;\ncx q[0], q[1];\n', None),  # measure_all added
    (
        'OPENQASM 2.0;\ninclude "qelib1.inc";\ngate bell a, b { h a; cx a, b; }\n'
        "qreg q[2];\nbell q[0], q[1];\n",
        None,
    ),
    ('OPENQASM 3.0;\ninclude "stdgates.inc";\nh $0;\ncx $0, $1;\n', None),
    (BELL2 + "if (c == 3) x q[0];\nmeasure q -> c;\n", None),
    ("qc = QuantumCircuit(2)\nqc.rxx(0.3, 0, 1)\nqc.reset(1)\nqc.barrier()\nqc.measure_all()\n", "qiskit"),
]


@pytest.mark.parametrize(("text", "language"), SOURCES)
def test_every_loaded_circuit_runs_on_aer(text: str, language: str | None) -> None:
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    result: Circuit = load_text(text, language=language)
    simulator = AerSimulator()
    job = simulator.run(transpile(result.circuit, simulator), shots=64, seed_simulator=1)
    counts = job.result().get_counts()
    assert sum(counts.values()) == 64
