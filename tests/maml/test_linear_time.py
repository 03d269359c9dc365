"""Parsing costs time linear in the size of the document, whatever the document holds.

Timing tests on a loaded machine are flaky when they compare against absolute times, so the main
test compares a document of N bytes with one of 4N bytes of the same hostile shape: linear cost
gives a ratio near 4, quadratic near 16, and the test asks for less than 10. Times are CPU times
(`time.process_time`) of the best of a few interleaved runs, so other processes on the machine
matter little, and the garbage collector is paused while the parser runs: a full collection walks
every object in the test process (hundreds of thousands once qiskit is imported), and one landing in
the larger run made a linear parse look 44 times slower in CI. One absolute bound remains as a
sanity check: hostile front matter at the 1 MiB size cap parses (or is refused) in under 2 s of CPU
time; before YAML 1.1 resolution was replaced, one sexagesimal scalar of that size took about 30 s.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable

import pytest

from mcp_server.errors import MacroslowError
from mcp_server.maml import parser

HEAD = '---\nmaml_version: "2.0"\nid: urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f\ntype: workflow\n'
CAP = parser.Limits().max_bytes


def lines(unit: Callable[[int], str], size: int) -> str:
    """Lines `unit(0)`, `unit(1)`, ... of about `size` characters in all."""
    out, total, index = [], 0, 0
    while total < size:
        line = unit(index)
        out.append(line)
        total += len(line)
        index += 1
    return "".join(out)


def long_key(size: int) -> str:
    """One key of size/2 characters over a flow sequence of size/4 items: building each item's field
    path as a string would cost the length of the key per item."""
    return "? " + "k" * (size // 2) + "\n: [" + "1," * (size // 4) + "1]\n"


SHAPES: dict[str, Callable[[int], str]] = {
    "sexagesimal scalars": lambda n: HEAD + lines(lambda i: f"k{i}: 1" + ":59" * 30 + "\n", n) + "---\n",
    "18-digit integers": lambda n: HEAD + lines(lambda i: f"k{i}: 123456789012345678\n", n) + "---\n",
    "floats": lambda n: HEAD + lines(lambda i: f"k{i}: 12345678.9012e+100\n", n) + "---\n",
    "flow sequence": lambda n: HEAD + "k: [" + "1:2," * (n // 4) + "1]\n---\n",
    "block sequence": lambda n: HEAD + "k:\n" + "- 0x1A\n" * (n // 7) + "---\n",
    "items under a long key": lambda n: HEAD + long_key(n) + "---\n",
    "one sexagesimal scalar": lambda n: HEAD + "x: 1" + ":59" * (n // 3) + "\n---\n",
    "schema numbers": lambda n: (
        HEAD + '---\n## Output_Schema\n```json\n{"a": [' + "1.5," * (n // 4) + "1]}\n```\n"
    ),
    "schema brackets": lambda n: (
        HEAD + '---\n## Output_Schema\n```json\n{"a": [' + "[[]]," * (n // 5) + "1]}\n```\n"
    ),
}


def cpu_time(text: str) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        with contextlib.suppress(MacroslowError):
            parser.parse(text)
        return time.process_time() - start
    finally:
        gc.enable()


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_four_times_the_bytes_costs_about_four_times_the_time(shape: str) -> None:
    size = 128 * 1024 if shape == "items under a long key" else 64 * 1024
    small, large = SHAPES[shape](size), SHAPES[shape](4 * size)
    cpu_time(small)  # warm up
    times_small, times_large = [], []
    for _ in range(3):
        times_small.append(cpu_time(small))
        times_large.append(cpu_time(large))
    # Linear is about 4, quadratic about 16. Below 5 ms a shared machine's noise dominates.
    ratio = min(times_large) / max(min(times_small), 5e-3)
    assert ratio < 10, f"{shape}: {min(times_small) * 1000:.1f} ms, then {min(times_large) * 1000:.1f} ms"


BOMBS = {
    "one sexagesimal scalar": HEAD + "x: 1" + ":59" * ((CAP - 200) // 3) + "\n---\n",
    "sexagesimal scalars": HEAD + lines(lambda i: f"k{i}: 1" + ":59" * 40 + "\n", CAP - 300) + "---\n",
    "one long integer": HEAD + "x: " + "9" * (CAP - 200) + "\n---\n",
    "4,000-digit integers": HEAD + lines(lambda i: f"k{i}: " + "9" * 4000 + "\n", CAP - 5000) + "---\n",
    "one long float": HEAD + "x: 1." + "9" * (CAP - 200) + "\n---\n",
    "deep flow nesting": HEAD + "x: " + "[" * (CAP - 200) + "\n---\n",
    "items under a long key": HEAD + long_key(CAP - 300) + "---\n",
}


@pytest.mark.parametrize("name", BOMBS, ids=list(BOMBS))
def test_hostile_front_matter_at_the_size_cap(name: str) -> None:
    document = BOMBS[name]
    assert CAP - 5000 <= len(document.encode()) <= CAP
    elapsed = cpu_time(document)
    assert elapsed < 2.0, f"{name}: {elapsed:.2f} s"
