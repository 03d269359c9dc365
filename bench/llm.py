"""Benchmarks of query_openai (targets 8-9 of bench/run.py), each against a floor measured in the same
run, with the real `openai` SDK talking HTTP to the loopback fake (tests/llm/openai_fake.py, run in
its own process so that its work does not share this process's interpreter lock).

  8. a cache hit through the in-memory client costs at most 2x a `verify_maml` call (of the same
     10 KiB signed document as target 1) on the same server and client;
  9. a cache miss adds at most 2 ms over the loopback server's own latency: `LlmService.query` with
     a new prompt each call (cache lookup, budget reservation and settlement, the SDK's call, cache
     store) vs a plain HTTP POST of the same body to the fake over a kept-alive connection. The
     whole tool call on a miss (MCP framing, guard, receipt) is printed as information.

    .venv/bin/python bench/llm.py      these two alone; exit codes as bench/run.py
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2
from mcp.client import Client
from pydantic import SecretStr
from run import (  # bench/run.py
    IN_PROCESS,
    VERIFY,
    BenchError,
    Fixture,
    async_sampler,
    make_fixture,
    ms,
    report,
    side_by_side,
    tool_sampler,
)

from mcp_server.auth.principal import Principal
from mcp_server.db import open_engine
from mcp_server.llm.chat import ChatRequest
from mcp_server.llm.service import LlmService
from mcp_server.server import build_server
from mcp_server.settings import Settings

FAKE = Path(__file__).resolve().parents[1] / "tests" / "llm" / "openai_fake.py"

MAX_HIT_RATIO = 2.0
MAX_MISS_OVERHEAD_MS = 2.0
API_KEY = "sk-bench"
PROMPT = "Benchmark question: what is the capital of France?"


class Fake:
    """The loopback OpenAI fake in a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(FAKE)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise BenchError("the loopback OpenAI fake did not start")

    def count(self) -> int:
        return int(httpx2.get(f"{self.url}/_fake/count").json()["count"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def llm_settings(fx: Fixture, fake: Fake) -> Settings:
    return fx.settings.model_copy(
        update={
            "llm_provider": "openai",
            "openai_api_key": SecretStr(API_KEY),
            "openai_base_url": f"{fake.url}/v1",
            "azure_openai_endpoint": None,
            "llm_token_budget": 10**12,
        }
    )


async def bench_cache_hit(fx: Fixture, fake: Fake) -> bool:
    async with Client(build_server(llm_settings(fx, fake))) as client:
        arguments = {"prompt": PROMPT, "max_tokens": 64}
        first = await client.call_tool("query_openai", arguments)
        hit = await client.call_tool("query_openai", arguments)
        if first.is_error or not (hit.structured_content or {}).get("cached"):
            raise BenchError(f"query_openai did not answer from its cache: {hit.model_dump_json()[:500]}")
        seen = fake.count()
        samplers = {
            "verify": await tool_sampler(client, VERIFY, fx.signed),
            "hit": async_sampler(lambda: client.call_tool("query_openai", arguments)),
        }
        t = await side_by_side(samplers, IN_PROCESS)
    if fake.count() != seen:
        raise BenchError("a cache hit reached the upstream")
    ratio = t["hit"] / t["verify"]
    return report(
        "query_openai cache hit (in-memory client)",
        f"{ms(t['hit'])} = {ratio:.2f}x verify_maml in-memory ({ms(t['verify'])})",
        f"target <= {MAX_HIT_RATIO:.1f}x",
        ratio <= MAX_HIT_RATIO,
    )


async def bench_cache_miss(fx: Fixture, fake: Fake) -> bool:
    settings = llm_settings(fx, fake)
    service = LlmService(settings, open_engine(settings.database))
    principal = Principal(sub="bench", issuer="local", scopes=frozenset({"openai:query"}), local=True)
    counter = itertools.count()
    body = ChatRequest("gpt-4o-mini", ({"role": "user", "content": PROMPT},), 64).body()

    async def miss() -> None:
        messages = ({"role": "user", "content": f"{PROMPT} #{next(counter)}"},)
        answer = await service.query(principal, messages, model=None, max_tokens=64)
        if answer.cached:
            raise BenchError("a new prompt was answered from the cache")

    async with httpx2.AsyncClient(base_url=fake.url, headers={"Authorization": f"Bearer {API_KEY}"}) as http:

        async def raw() -> None:
            response = await http.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                raise BenchError(f"the fake answered {response.status_code}")

        async def sdk() -> None:  # the same POST through the SDK client the service uses
            await service._client_for().post("/chat/completions", body=body, cast_to=httpx2.Response)

        samplers = {"raw": async_sampler(raw), "sdk": async_sampler(sdk), "miss": async_sampler(miss)}
        try:
            t = await side_by_side(samplers, IN_PROCESS)
        finally:
            await service.aclose()
            service.engine.dispose()
        # Information: the whole tool call on a miss, measured apart (the server's background work
        # does not run during the target's measurement above).
        async with Client(build_server(settings)) as client:

            async def tool() -> None:
                arguments = {"prompt": f"{PROMPT} tool #{next(counter)}", "max_tokens": 64}
                result = await client.call_tool("query_openai", arguments)
                if result.is_error or (result.structured_content or {}).get("cached"):
                    raise BenchError(f"query_openai miss failed: {result.model_dump_json()[:500]}")

            info = await side_by_side({"raw": async_sampler(raw), "tool": async_sampler(tool)}, IN_PROCESS)
    overhead = t["miss"] - t["raw"]
    ok = report(
        "query_openai cache miss (service)",
        f"{ms(t['miss'])} = loopback POST ({ms(t['raw'])}) + {ms(overhead)}",
        f"target overhead <= {MAX_MISS_OVERHEAD_MS:.1f} ms",
        overhead * 1000 <= MAX_MISS_OVERHEAD_MS,
    )
    report(
        "  of which the openai SDK client",
        f"{ms(t['sdk'] - t['raw'])} (the same POST through it: {ms(t['sdk'])}); the rest is the "
        f"cache lookup, budget reservation and settlement, cache store: {ms(t['miss'] - t['sdk'])}",
    )
    report(
        "  whole tool call on a miss (in-memory)",
        f"{ms(info['tool'])} = loopback POST ({ms(info['raw'])}) + {ms(info['tool'] - info['raw'])}, "
        "with MCP framing, guard and receipt",
    )
    return ok


async def bench_llm(fx: Fixture) -> bool:
    """Targets 8-9; True when both are met."""
    fake = Fake()
    print(f"\nquery_openai: openai SDK against a loopback fake ({fake.url}), fresh prompts for misses")
    try:
        miss = await bench_cache_miss(fx, fake)  # first: no server has run in this process yet
        return all([await bench_cache_hit(fx, fake), miss])
    finally:
        fake.stop()


def main() -> int:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="macroslow-bench-llm-") as tmp:
        try:
            ok = anyio.run(bench_llm, make_fixture(Path(tmp) / "home"))
        except Exception as exc:
            print(f"\nbroken run: {type(exc).__name__}: {exc}")
            return 2
    print(f"\n{'PASS' if ok else 'FAIL'}: {time.perf_counter() - t0:.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
