"""Limits and error placement shared by the circuit front ends (`qasm_guard`, `qiskit_subset`) and
their entry point (`circuits`).

Holds: the fixed bounds (`MAX_NESTING`, `MAX_NUMBER`, `MAX_BYTES`, `MAX_LOOP_BOUND`), the per-call
limits (`Limits`), where a source sits in its document and how an error there is raised (`Where`),
and the two helpers that turn a parser's exception into a one-line message (`exception_message`,
`clean_message`).

Does not hold: any parsing, checking or counting - and it imports nothing from the quantum package
and nothing from qiskit, so every other circuit module can depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from mcp_server.errors import InvalidDocument

MAX_NESTING = 32  # brackets in QASM, expressions in the qiskit subset, custom gates inside each other
MAX_NUMBER = 10**18  # integers in the qiskit subset
MAX_BYTES = 1_048_576
MAX_LOOP_BOUND = 10**9  # literals in OpenQASM 3 for-loop ranges


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_operations: int
    max_qubits: int
    max_qasm3_bytes: int


@dataclass(frozen=True)
class Where:
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


def exception_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else str(exc)


def clean_message(message: str) -> str:
    """One line, bounded, for people: parsers' messages sometimes span lines."""
    text = " ".join(message.split())
    return text if len(text) <= 300 else text[:297] + "..."
