"""Benchmarks for `verify_maml`, each against a floor measured in the same run.

    /work/venv/bin/python bench/run.py      exit 0: every target met; 1: a target missed; 2: broken run

Targets (from the issue):
  1. in-process `verify_maml` (library path, `inspect_signature`) on a 10 KiB signed document: at
     most 3x the raw ML-DSA-65 verify of the same canonical bytes;
  2. `verify_maml` over stdio, sequential calls through the official client: at least half the
     calls per second of a no-op tool served by the same SDK (bench/noop_server.py), and at least
     0.7x a no-op tool that also commits one durable SQLite row per call (`noop_server.py durable`:
     the honest floor for a call that leaves a durable record, issue 15);
  3. cold start of `serve --transport stdio` to the `initialize` answer: at most 1.2x the no-op
     server's, interleaved in the same run (bench/coldstart.py, which also runs alone);
  4. the policy guard (principal, scope, rate limit in SQLite) adds at most 0.3 ms per call
     in-process: `verify_maml` through the in-memory client with the policy on vs the same server
     with the guard replaced by a no-op, and the guard alone, for the local principal and for a
     bearer token (verified once, then cached);
  5. receipts ledger appends on SQLite (one writer, durable engine), each covered by a signed
     checkpoint before it returns: at least 2,000/s, next to plain INSERTs of the same rows;
  6. covered ledger appends on PostgreSQL from 8 writer processes: at least 1,000/s and at least 1.5x
     plain one-row INSERTs from 8 processes (skipped when no PostgreSQL server answers at
     127.0.0.1:5432);
  7. `Ledger.verify()` over 100,000 receipts in under 10 s.
Targets 5-7 are in bench/ledger.py (`.venv/bin/python bench/ledger.py` runs them alone).
  8. a query_openai cache hit over the in-memory client: at most 2x verify_maml's call there;
  9. a query_openai cache miss: at most 2 ms over the loopback OpenAI fake's own latency.
Targets 8-9 are in bench/llm.py (`.venv/bin/python bench/llm.py` runs them alone).
 10. run_quantum_circuit over the in-memory client, GHZ-5 and a 20-qubit random circuit at 1024 shots,
     against calling AerSimulator directly on the same circuit: GHZ-5 at most 2x, the 20-qubit circuit
     at most 1.2x (bench/quantum.py).
 11. seal and open of a 1 MiB document for one recipient: at most 1.5x raw AES-256-GCM plus one
     ML-KEM-768 + X25519 encapsulation (decapsulation), same run (bench/sealing.py).
 12. verify_maml over Streamable HTTP, 16 concurrent clients: two `serve` processes at least 1.6x one
     process, and server CPU per call at most the SDK no-op tool's plus 2 ms (bench/replicas.py).
 13. 16 callers' verify_maml p99 with one hostile caller sending documents at the size cap built to be
     slow to parse: at most 3x their p99 without it (bench/hostile.py).
 14. verify_maml over stdio with two loopback witnesses in strict mode: at least 0.5x the default
     (background) mode's calls per second (bench/witness.py).

The servers run with a rate limit too high to trip (1e9 a minute), so the limiter's database
statement is in every measured call without refusing any.

The machine is shared and noisy, so compared operations are measured side by side: warm up, then
alternate short rounds of each (rotating which goes first) and take the median round of each.
"""

from __future__ import annotations

import base64
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult
from pydantic import SecretStr

from mcp_server.crypto import mldsa
from mcp_server.crypto.keys import KeyStore
from mcp_server.home import example_workflow, initialize, open_keys
from mcp_server.maml import parser
from mcp_server.server import build_server
from mcp_server.settings import Settings
from mcp_server.signing import inspect_signature, sign_document

# Targets.
MAX_LIBRARY_RATIO = 3.0
MIN_STDIO_RATIO = 0.5
MIN_DURABLE_RATIO = 0.7
MAX_GUARD_MS = 0.3
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # tmpfs, for the no-flush comparison
UNLIMITED_RATE = {"MACROSLOW_RATE_PER_MINUTE": "1e9", "MACROSLOW_RATE_BURST": "1000000000"}

DOCUMENT_BYTES = 10 * 1024  # the workflow before signing; the signature block adds ~4.5 KiB
NOOP_SERVER = Path(__file__).with_name("noop_server.py")
LABEL_WIDTH = 42


@dataclass(frozen=True)
class Rounds:
    warmup: int  # calls per operation before timing
    rounds: int  # timed rounds per operation, interleaved
    per_round: int  # calls per round


# Short rounds pair the compared operations closely in time; the sizes keep the run near half a minute.
IN_PROCESS = Rounds(warmup=100, rounds=30, per_round=20)
STDIO = Rounds(warmup=50, rounds=40, per_round=10)  # 400 timed calls per server
COLD_STARTS = 9  # per server, interleaved, after one discarded start each


class BenchError(Exception):
    """The run cannot be trusted: a server answered wrongly, or a fixture did not check out."""


# -- the document ----------------------------------------------------------------------------------


def padded_workflow(size: int = DOCUMENT_BYTES) -> str:
    """The example workflow with plain text lines added to its `## Context` section: `size` bytes."""
    text = example_workflow()
    start = text.index("\n## Context\n") + 1
    end = text.index("\n## ", start) + 1  # the next section's heading
    head, tail = text[:end].rstrip("\n") + "\n", "\n" + text[end:]
    missing = size - len((head + tail).encode("utf-8"))
    if missing < 0:
        raise BenchError(f"the example workflow is already larger than {size} bytes")
    padding: list[str] = []
    while missing > 0:
        line = f"Padding line {len(padding):04d}: plain prose with no markup, here only to add bytes.\n"
        if len(line) > missing:
            line = line[: missing - 1] + "\n"
        padding.append(line)
        missing -= len(line)
    return head + "".join(padding) + tail


@dataclass(frozen=True)
class Fixture:
    settings: Settings
    keys: KeyStore
    limits: parser.Limits
    unsigned_bytes: int
    signed: str
    canonical: bytes
    signature: bytes
    public_key: mldsa.PublicKey


def make_fixture(home: Path) -> Fixture:
    """Initialise `home`, sign the padded workflow, and check that both verify paths accept it."""
    settings = Settings(
        home=home,
        log_level="WARNING",
        signing_algorithm=mldsa.Algorithm.ML_DSA_65,
        rate_per_minute=1e9,
        rate_burst=10**9,
    )
    initialize(settings)
    keys = open_keys(settings)
    limits = parser.Limits(max_bytes=settings.max_document_bytes, max_depth=settings.max_yaml_depth)
    document = padded_workflow()
    signed = sign_document(document, keys, limits=limits).signed_document
    block = parser.parse(signed, limits).front_matter.signature
    public = keys.public_key(block.key_id) if block else None
    if block is None or public is None or mldsa.algorithm_of(public) != mldsa.Algorithm.ML_DSA_65:
        raise BenchError("the signed document does not carry an ML-DSA-65 signature by a known key")
    fixture = Fixture(
        settings=settings,
        keys=keys,
        limits=limits,
        unsigned_bytes=len(document.encode("utf-8")),
        signed=signed,
        canonical=parser.canonical_bytes(signed, limits),
        signature=base64.b64decode(block.value, validate=True),
        public_key=public,
    )
    fixture.public_key.verify(fixture.signature, fixture.canonical, mldsa.MAML_CONTEXT)
    report = inspect_signature(signed, keys, limits=limits)
    if not (report.valid and report.trusted):
        raise BenchError(f"inspect_signature rejects the benchmark document: {report.reasons}")
    return fixture


# -- timing ----------------------------------------------------------------------------------------

Sampler = Callable[[int], Awaitable[float]]
"""Runs an operation n times in a row and returns the elapsed seconds."""


def sync_sampler(call: Callable[[], object]) -> Sampler:
    async def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        return time.perf_counter() - t0

    return run


def async_sampler(call: Callable[[], Awaitable[object]]) -> Sampler:
    async def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await call()
        return time.perf_counter() - t0

    return run


async def side_by_side(samplers: dict[str, Sampler], plan: Rounds) -> dict[str, float]:
    """Median seconds per call of each operation, over rounds that alternate between them."""
    for sampler in samplers.values():
        await sampler(plan.warmup)
    names = list(samplers)
    per_call: dict[str, list[float]] = {name: [] for name in names}
    for index in range(plan.rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            per_call[name].append(await samplers[name](plan.per_round) / plan.per_round)
    return {name: statistics.median(values) for name, values in per_call.items()}


# -- servers and tools -----------------------------------------------------------------------------


def _verified(result: CallToolResult) -> bool:
    content = result.structured_content or {}
    return not result.is_error and content.get("valid") is True and content.get("trusted") is True


def _ok(result: CallToolResult) -> bool:
    return not result.is_error and any(getattr(c, "text", None) == "ok" for c in result.content)


@dataclass(frozen=True)
class Tool:
    name: str
    answered: Callable[[CallToolResult], bool]  # the answer to the benchmark document is the expected one


VERIFY = Tool("verify_maml", _verified)
NOOP = Tool("noop", _ok)


@dataclass(frozen=True)
class Server:
    name: str  # what `initialize` reports as serverInfo.name
    params: StdioServerParameters
    tool: Tool


def project_server(home: Path, **env: str) -> Server:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "serve", "--transport", "stdio"],
        env={"MACROSLOW_HOME": str(home), "MACROSLOW_LOG_LEVEL": "WARNING", **UNLIMITED_RATE, **env},
    )
    return Server("macroslow-mcp", params, VERIFY)


def noop_server(*args: str) -> Server:
    params = StdioServerParameters(command=sys.executable, args=[str(NOOP_SERVER), *args])
    return Server("noop", params, NOOP)


def connect(server: Server, errlog: TextIO, mode: str = "auto") -> Client:
    return Client(stdio_client(server.params, errlog=errlog), mode=mode)


async def tool_sampler(client: Client, tool: Tool, document: str) -> Sampler:
    """A sampler calling `tool` with the document, after checking that one answer is the expected one."""
    arguments = {"document": document}
    result = await client.call_tool(tool.name, arguments)
    if not tool.answered(result):
        raise BenchError(f"{tool.name} answered unexpectedly: {result.model_dump_json()[:500]}")
    return async_sampler(lambda: client.call_tool(tool.name, arguments))


# -- report ----------------------------------------------------------------------------------------


def report(label: str, figures: str, target: str = "", passed: bool | None = None) -> bool:
    """Print one measurement; `passed` None marks information, not a target. Returns False on a miss."""
    verdict = "" if passed is None else ("PASS" if passed else "FAIL")
    print(f"{label:<{LABEL_WIDTH}} {figures}  {target}  {verdict}".rstrip(), flush=True)
    return passed is not False


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def header(fixture: Fixture) -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    versions = ", ".join(f"{name} {version(name)}" for name in ("mcp", "cryptography", "pydantic"))
    print(f"cpus: {os.cpu_count()} (usable {affinity}); {versions}")
    print(
        f"rounds: in-process {IN_PROCESS.rounds}x{IN_PROCESS.per_round} calls, stdio {STDIO.rounds}x"
        f"{STDIO.per_round} calls, interleaved, medians; cold starts {COLD_STARTS} per server (+1 discarded)"
    )
    print(
        f"document: example workflow padded to {fixture.unsigned_bytes} bytes, "
        f"{len(fixture.signed.encode('utf-8'))} bytes signed (ML-DSA-65), "
        f"{len(fixture.canonical)} canonical bytes verified"
    )
    print()


# -- the three benchmarks --------------------------------------------------------------------------


async def bench_in_process(fx: Fixture) -> bool:
    raw = sync_sampler(lambda: fx.public_key.verify(fx.signature, fx.canonical, mldsa.MAML_CONTEXT))
    library = sync_sampler(lambda: inspect_signature(fx.signed, fx.keys, limits=fx.limits))
    async with Client(build_server(fx.settings)) as client:
        memory = await tool_sampler(client, VERIFY, fx.signed)
        t = await side_by_side({"raw": raw, "library": library, "memory": memory}, IN_PROCESS)
    floor = f"raw ML-DSA-65 verify ({ms(t['raw'])})"
    ratio = t["library"] / t["raw"]
    ok = report(
        "verify_maml in-process (library)",
        f"{ms(t['library'])} = {ratio:.1f}x {floor}",
        f"target <= {MAX_LIBRARY_RATIO:.1f}x",
        ratio <= MAX_LIBRARY_RATIO,
    )
    report(
        "verify_maml in-process (in-memory client)",
        f"{ms(t['memory'])} = {t['memory'] / t['raw']:.1f}x {floor}",
    )
    return ok


async def bench_stdio(home: Path, document: str, errlog: TextIO) -> bool:
    # A third server, as information: the same, with its ledger on tmpfs (no disk flush per call),
    # to show how much of a call is the receipt's flush to disk.
    with tempfile.TemporaryDirectory(dir=SHM) as shm:
        tmpfs = project_server(home, MACROSLOW_DATABASE_URL=f"sqlite:///{shm}/l.db")
        servers = {
            "project": project_server(home),
            "noop": noop_server(),
            "durable": noop_server("durable", str(home / "durable-floor.db")),
            "tmpfs": tmpfs,
        }
        async with AsyncExitStack() as stack:
            samplers: dict[str, Sampler] = {}
            protocols: set[str] = set()
            for key, server in servers.items():
                client = await stack.enter_async_context(connect(server, errlog))
                protocols.add(client.protocol_version)
                samplers[key] = await tool_sampler(client, server.tool, document)
            t = await side_by_side(samplers, STDIO)
    verify, noop = t["project"], t["noop"]
    ratio = noop / verify  # calls per second are the inverse of seconds per call
    ok = report(
        "verify_maml over stdio (sequential)",
        f"{1 / verify:.0f} calls/s = {ratio:.2f}x no-op tool ({1 / noop:.0f} calls/s)",
        f"target >= {MIN_STDIO_RATIO:.1f}x",
        ratio >= MIN_STDIO_RATIO,
    )
    durable = t["durable"] / verify
    ok = (
        report(
            "  next to a no-op that commits one row",
            f"{durable:.2f}x its {1 / t['durable']:.0f} calls/s (SQLite WAL, synchronous=FULL, a row a call)",
            f"target >= {MIN_DURABLE_RATIO:.1f}x",
            durable >= MIN_DURABLE_RATIO,
        )
        and ok
    )
    report(
        "  per call over stdio",
        f"verify_maml {ms(verify)}, no-op {ms(noop)}, difference {ms(verify - noop)} "
        f"(protocol {', '.join(sorted(protocols))})",
    )
    report(
        "  same, ledger on tmpfs (no disk flush)",
        f"{1 / t['tmpfs']:.0f} calls/s = {noop / t['tmpfs']:.2f}x no-op: the receipt's flush to disk "
        f"costs {ms(verify - t['tmpfs'])} a call here",
    )
    return ok


async def bench_cold_start(home: Path, errlog: TextIO) -> bool:
    import coldstart  # bench/coldstart.py: raw pipes, so no client library is on the measured path

    print("serve cold start (stdio, to initialize), next to the no-op server:")
    return coldstart.run(COLD_STARTS, errlog, home)


async def bench_guard(fx: Fixture) -> bool:
    from mcp_server.auth.local_issuer import mint
    from mcp_server.policy.guard import Decision
    from mcp_server.policy.operations import OPERATIONS

    token = mint(fx.settings, sub="bench", scopes=["maml:read"], ttl=3600)
    with_token = fx.settings.model_copy(update={"token": SecretStr(token)})
    on, off = build_server(fx.settings), build_server(fx.settings)
    local, bearer = build_server(fx.settings), build_server(with_token)

    async def admit_all(principal: object, name: str) -> object:
        return OPERATIONS[name]

    def decide_all(principal: object, operation: object, **_: object) -> object:
        return Decision(principal, operation)  # type: ignore[arg-type]

    def identify_and_guard(server: Any, services: Any) -> Callable[[], Awaitable[object]]:
        async def run() -> object:
            return await services.guard.guard(await server.admission.identify(), "verify_maml")

        return run

    async with (
        local.host.open(),
        bearer.host.open(),
        Client(on) as client_on,
        Client(off) as client_off,
    ):
        local_services, bearer_services = await local.host.ready(), await bearer.host.ready()
        off_guard = (await off.host.ready()).guard
        off_guard.admit = admit_all  # type: ignore[method-assign]
        off_guard.decide = decide_all  # type: ignore[method-assign]
        samplers = {
            "guard local": async_sampler(identify_and_guard(local, local_services)),
            "guard token": async_sampler(identify_and_guard(bearer, bearer_services)),
            "policy on": await tool_sampler(client_on, VERIFY, fx.signed),
            "policy off": await tool_sampler(client_off, VERIFY, fx.signed),
        }
        t = await side_by_side(samplers, IN_PROCESS)
    worst = max(t["guard local"], t["guard token"])
    ok = report(
        "policy guard alone (in-process)",
        f"local principal {ms(t['guard local'])}, bearer token (cached) {ms(t['guard token'])}",
        f"target <= {MAX_GUARD_MS:.1f} ms",
        worst * 1000 <= MAX_GUARD_MS,
    )
    report(
        "  verify_maml in-memory, policy on vs off",
        f"{ms(t['policy on'])} vs {ms(t['policy off'])}: difference {ms(t['policy on'] - t['policy off'])}",
    )
    return ok


async def run_all(home: Path, errlog: TextIO) -> bool:
    fixture = make_fixture(home)
    header(fixture)
    results = [
        await bench_in_process(fixture),
        await bench_guard(fixture),
        await bench_stdio(home, fixture.signed, errlog),
        await bench_cold_start(home, errlog),
    ]
    from ledger import bench_ledger  # bench/ledger.py, which imports this module's helpers

    results.append(await bench_ledger(errlog))
    from llm import bench_llm  # bench/llm.py: query_openai's cache hit and cache miss

    results.append(await bench_llm(fixture))
    from quantum import bench_quantum  # bench/quantum.py: run_quantum_circuit vs AerSimulator direct

    results.append(await bench_quantum())
    from sealing import bench_sealing  # bench/sealing.py: seal/open vs raw AES-GCM + hybrid KEM

    results.append(await bench_sealing())
    from replicas import bench_replicas  # bench/replicas.py: one vs two serve processes over HTTP

    results.append(await bench_replicas())
    from hostile import bench_hostile  # bench/hostile.py: 16 callers' p99 with and without a hostile one

    results.append(await bench_hostile())
    from witness import bench_witness  # bench/witness.py: strict vs default witnessing over stdio

    results.append(await bench_witness())
    return all(results)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, which task groups wrap errors in."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def main() -> int:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="macroslow-bench-") as tmp:
        log_path = Path(tmp) / "servers-stderr.log"
        with open(log_path, "w", encoding="utf-8") as errlog:
            try:
                ok = anyio.run(run_all, Path(tmp) / "home", errlog)
            except Exception as exc:  # a broken run is reported, with the servers' last words
                for error in _leaves(exc):
                    print(f"\nbroken run: {type(error).__name__}: {error}")
                for line in log_path.read_text(encoding="utf-8").splitlines()[-10:]:
                    print(f"  server: {line}")
                return 2
    print(f"\n{'PASS' if ok else 'FAIL'}: {time.perf_counter() - t0:.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
