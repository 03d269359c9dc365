"""The sealed-text parser (`sealing.parse_sealed`) against arbitrary and mutated input: anything it
refuses is a `MacroslowError` (never ValueError, binascii.Error, IndexError, ...)."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_server import sealing
from mcp_server.crypto import kem
from mcp_server.errors import MacroslowError

DOCUMENT_ID = "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"


def _sealed_text() -> str:
    public = kem.generate().public_key()
    return sealing.render(sealing.seal_bytes(b"---\nid: x\n---\n", DOCUMENT_ID, [public]))


SEALED = _sealed_text()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _parse(data: str | bytes) -> None:
    with contextlib.suppress(MacroslowError):
        sealing.parse_sealed(data, max_bytes=1 << 20)


@FUZZ
@given(st.one_of(st.text(max_size=2000), st.binary(max_size=2000)))
def test_arbitrary_input(data: str | bytes) -> None:
    _parse(data)


@FUZZ
@given(st.integers(0, len(SEALED) - 1), st.text(max_size=40), st.integers(0, 60))
def test_mutated_sealed_text(at: int, insert: str, cut: int) -> None:
    _parse(SEALED[:at] + insert + SEALED[at + cut :])


@FUZZ
@given(st.lists(st.sampled_from(SEALED.splitlines()), max_size=40))
def test_shuffled_lines(lines: list[str]) -> None:
    _parse("\n".join(lines))


def test_bombs() -> None:
    header = SEALED.split("recipients:")[0]
    for hostile in (
        header + "recipients:\n" + '  - key_id: "' + "0" * 32 + '"\n' * 10_000,
        SEALED.replace('nonce: "', 'nonce: "' + "A" * 500_000),
        "---\n" * 200_000,
        SEALED + "9" * 5000,
    ):
        _parse(hostile)
