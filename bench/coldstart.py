"""Cold start of `serve --transport stdio` to the `initialize` answer, next to bench/noop_server.py.

    .venv/bin/python bench/coldstart.py [--rounds N]   exit 0: ratio <= 1.2x; 1: above; 2: broken run

Target (from the issue): a fresh `macroslow-mcp serve --transport stdio` answers `initialize` in at
most 1.2x the time the no-op server on the same SDK takes (bench/noop_server.py, one async tool),
both measured side by side in this run.

Each start is a fresh process of this interpreter, started the way bench/run.py starts it (ours:
`-m mcp_server serve --transport stdio`, the no-op: `bench/noop_server.py`, the SDK client's default
environment plus the same MACROSLOW_* variables). The clock runs from just before the spawn until
the answer's line arrives on stdout: the `initialize` request line is written to the pipe at once
(the server reads it when it gets there) and the answer is read from raw pipes, so no client
library is on the measured path. stdin is then closed and the process waited for, outside the
clock, so starts never overlap.

Our home is initialised once beforehand (`macroslow-mcp init`, in a temporary directory), so key
generation is not measured; the first start of each server is discarded (it also migrates the
new database and fills the page and bytecode caches). Starts alternate between the two servers,
which goes first swapping every round, because the machine is shared and noisy: only the ratio of
the medians is meaningful, never one timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAX_RATIO = 1.2
DEFAULT_ROUNDS = 15
TIMEOUT_S = 60.0  # one start; far above any healthy start, so a hung server breaks the run
NOOP_SERVER = Path(__file__).with_name("noop_server.py")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The variables bench/run.py gives `serve` (a rate limit too high to trip, warnings only).
UNLIMITED_RATE = {"MACROSLOW_RATE_PER_MINUTE": "1e9", "MACROSLOW_RATE_BURST": "1000000000"}
# What the SDK's stdio client passes on from the parent's environment (mcp.client.stdio on POSIX).
INHERITED = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")
# What the official client sends first in legacy mode (mcp.client.session.ClientSession.initialize).
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "coldstart-bench", "version": "0"},
    },
}


class BenchError(Exception):
    """The run cannot be trusted: a server did not start, or answered wrongly."""


@dataclass(frozen=True)
class Server:
    name: str  # what `initialize` must report as serverInfo.name
    argv: list[str]
    env: dict[str, str]


def base_environment() -> dict[str, str]:
    env = {key: os.environ[key] for key in INHERITED if key in os.environ}
    return {key: value for key, value in env.items() if not value.startswith("()")}


def project_server(home: Path) -> Server:
    env = {
        **base_environment(),
        "MACROSLOW_HOME": str(home),
        "MACROSLOW_LOG_LEVEL": "WARNING",
        **UNLIMITED_RATE,
    }
    return Server("macroslow-mcp", [sys.executable, "-m", "mcp_server", "serve", "--transport", "stdio"], env)


def noop_server() -> Server:
    return Server("noop", [sys.executable, str(NOOP_SERVER)], base_environment())


def initialise_home(home: Path, errlog: IO[str]) -> None:
    """`macroslow-mcp init` in a child process: the signing key exists before the first start."""
    server = project_server(home)
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server", "init"],
        env=server.env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=errlog,
        timeout=TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"`macroslow-mcp init` exited with {done.returncode}")


def _read_lines(stream: IO[bytes], deadline: float) -> Iterator[tuple[float, bytes]]:
    """Lines from a raw pipe as they arrive, each with the perf_counter() of its arrival;
    BenchError at the deadline or at end of file."""
    fd = stream.fileno()
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not selector.select(left):
                raise BenchError(f"no answer within {TIMEOUT_S:.0f} s")
            chunk = os.read(fd, 65536)
            arrived = time.perf_counter()
            if not chunk:
                raise BenchError("the server closed stdout before answering initialize")
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                yield arrived, line


def cold_start(server: Server, errlog: IO[str]) -> float:
    """Seconds from spawning `server` to the line carrying its `initialize` answer."""
    request = json.dumps(INITIALIZE).encode() + b"\n"
    t0 = time.perf_counter()
    process = subprocess.Popen(
        server.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errlog,
        env=server.env,
        cwd=PROJECT_ROOT,
        bufsize=0,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(request)  # the pipe holds it until the server reads
        for arrived, line in _read_lines(process.stdout, t0 + TIMEOUT_S):
            message = json.loads(line)
            if message.get("id") == INITIALIZE["id"]:  # anything before the answer is skipped
                elapsed = arrived - t0
                break
        process.stdin.close()
        process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
    info = message.get("result", {}).get("serverInfo", {})
    if info.get("name") != server.name:
        raise BenchError(f"expected server {server.name!r}, initialize answered {str(message)[:300]}")
    return elapsed


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:7.1f} ms  "
        f"min {min(values) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"
    )


def run(rounds: int, errlog: IO[str], home: Path) -> bool:
    initialise_home(home, errlog)
    ours, noop = project_server(home), noop_server()
    starts: dict[str, list[float]] = {ours.name: [], noop.name: []}
    for server in (ours, noop):  # discarded: migrates the database, fills the caches
        cold_start(server, errlog)
    for index in range(rounds):
        order = (ours, noop) if index % 2 == 0 else (noop, ours)
        for server in order:
            starts[server.name].append(cold_start(server, errlog))
    project, floor = statistics.median(starts[ours.name]), statistics.median(starts[noop.name])
    ratio = project / floor
    print(f"{'serve (stdio)':<16} {summary(starts[ours.name])}")
    print(f"{'no-op server':<16} {summary(starts[noop.name])}")
    print(f"{'difference':<16} median {(project - floor) * 1000:7.1f} ms")
    min_ratio = min(starts[ours.name]) / min(starts[noop.name])
    # Each round's two starts are adjacent in time: the median of their ratios is a second view.
    paired = statistics.median(a / b for a, b in zip(starts[ours.name], starts[noop.name], strict=True))
    passed = ratio <= MAX_RATIO
    print(
        f"ratio of medians {ratio:.2f}x (of minimums {min_ratio:.2f}x, median per-round ratio "
        f"{paired:.2f}x)  target <= {MAX_RATIO:.1f}x  {'PASS' if passed else 'FAIL'}"
    )
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="timed starts per server")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"python {platform.python_version()} on {platform.platform()}; cpus usable {cpus}; load {load}")
    print(f"cold starts to the initialize answer: {args.rounds} per server (+1 discarded), interleaved")
    with tempfile.TemporaryDirectory(prefix="macroslow-coldstart-") as tmp:
        log_path = Path(tmp) / "servers-stderr.log"
        with open(log_path, "w", encoding="utf-8") as errlog:
            try:
                ok = run(args.rounds, errlog, Path(tmp) / "home")
            except (BenchError, OSError, subprocess.SubprocessError, ValueError) as exc:
                print(f"\nbroken run: {type(exc).__name__}: {exc}")
                errlog.flush()
                for line in log_path.read_text(encoding="utf-8").splitlines()[-10:]:
                    print(f"  server: {line}")
                return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
