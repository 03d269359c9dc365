"""`macroslow-mcp demo`: the main job. Drives the real server over stdio with the official MCP client,
as an agent would, checks every answer, and prints a report. Exit 0 only if every step behaved."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from mcp_server.adapters.results import error_of
from mcp_server.home import EXAMPLE_NAME, initialize
from mcp_server.settings import Settings


@dataclass
class Step:
    name: str
    ok: bool
    ms: float
    detail: str


class DemoFailure(Exception):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailure(message)


def _tamper(text: str) -> tuple[str, int]:
    """Change one byte in the body (the first letter of the Intent text): returns text and offset."""
    start = text.index("## Intent\n") + len("## Intent\n")
    old = text[start]
    new = "X" if old != "X" else "Y"
    return text[:start] + new + text[start + 1 :], len(text[:start].encode("utf-8"))


async def _drive(home: Path, steps: list[Step], log_file: Any) -> None:
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {"MACROSLOW_HOME": str(home), "MACROSLOW_LOG_LEVEL": "WARNING"}
    if "MACROSLOW_KEY_PASSPHRASE" in os.environ:
        env["MACROSLOW_KEY_PASSPHRASE"] = os.environ["MACROSLOW_KEY_PASSPHRASE"]
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server", "serve", "--transport", "stdio"], env=env
    )
    example = (home / "workflows" / EXAMPLE_NAME).read_text(encoding="utf-8")
    context: dict[str, Any] = {}

    async def step(name: str, action: Callable[[], Awaitable[str]]) -> None:
        t0 = time.perf_counter()
        try:
            detail = await action()
            ok = True
        except DemoFailure as exc:
            detail, ok = f"unexpected: {exc}", False
        steps.append(Step(name, ok, (time.perf_counter() - t0) * 1000, detail))

    t0 = time.perf_counter()
    async with Client(stdio_client(params, errlog=log_file)) as client:
        info = client.server_info
        steps.append(
            Step(
                "initialize (spawn server, handshake)",
                info is not None and info.name == "macroslow-mcp",
                (time.perf_counter() - t0) * 1000,
                f"server {info.name if info else '?'} {info.version if info else ''}, protocol "
                f"{client.protocol_version}",
            )
        )

        async def list_tools() -> str:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            _expect({"validate_maml", "sign_maml", "verify_maml"} <= set(names), f"tools {names}")
            return ", ".join(names)

        async def list_resources() -> str:
            res = [str(r.uri) for r in (await client.list_resources()).resources]
            tpl = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            _expect("maml://workflows" in res and "maml://workflows/{id}" in tpl, f"resources {res} {tpl}")
            return ", ".join(res + tpl)

        async def validate() -> str:
            r = await client.call_tool("validate_maml", {"document": example})
            sc = r.structured_content or {}
            _expect(not r.is_error and sc.get("valid") is True, f"{sc}")
            context["id"] = sc["document_id"]
            return f"valid {sc['type']} {sc['document_id']}, sections {', '.join(sc['sections'])}"

        async def sign() -> str:
            r = await client.call_tool("sign_maml", {"document": example})
            sc = r.structured_content or {}
            _expect(not r.is_error and "signed_document" in sc, f"{sc}")
            context["signed"] = sc["signed_document"]
            return f"{sc['algorithm']} key {sc['key_id']}, {sc['digest'][:23]}…"

        async def verify() -> str:
            r = await client.call_tool("verify_maml", {"document": context["signed"]})
            sc = r.structured_content or {}
            _expect(sc.get("valid") is True and sc.get("trusted") is True, f"{sc}")
            return f"valid and trusted (key {sc['key_id']})"

        async def verify_tampered() -> str:
            tampered, offset = _tamper(context["signed"])
            r = await client.call_tool("verify_maml", {"document": tampered})
            sc = r.structured_content or {}
            _expect(not r.is_error and sc.get("valid") is False, f"tampered document accepted: {sc}")
            return f"byte {offset} changed -> valid=false: {'; '.join(sc['reasons'])}"

        async def read_list() -> str:
            (home / "workflows" / EXAMPLE_NAME).write_text(context["signed"], encoding="utf-8")
            r = await client.read_resource("maml://workflows")
            data = json.loads(r.contents[0].text)  # type: ignore[union-attr]
            entry = next((w for w in data["workflows"] if w["id"] == context["id"]), None)
            if entry is None or entry["signature"] != "trusted":
                raise DemoFailure(f"{data}")
            return f"{len(data['workflows'])} workflow(s); {entry['title']!r} signature {entry['signature']}"

        async def read_one() -> str:
            r = await client.read_resource(f"maml://workflows/{context['id']}")
            text = r.contents[0].text  # type: ignore[union-attr]
            _expect(text == context["signed"], "workflow resource differs from the signed document")
            return f"{len(text.encode('utf-8'))} bytes, identical to the signed document"

        async def read_missing() -> str:
            from mcp.shared.exceptions import MCPError

            try:
                await client.read_resource("maml://workflows/urn:uuid:00000000-0000-0000-0000-000000000000")
            except MCPError as exc:
                return f"refused cleanly: {exc.error.message}"
            raise DemoFailure("unknown workflow id was answered")

        await step("tools/list", list_tools)
        await step("resources/list + templates", list_resources)
        await step("validate_maml(example)", validate)
        await step("sign_maml(example)", sign)
        await step("verify_maml(signed)", verify)
        await step("verify_maml(one byte tampered)", verify_tampered)
        await step("read maml://workflows", read_list)
        await step("read maml://workflows/{id}", read_one)

        async def list_receipts() -> str:
            r = await client.call_tool("list_receipts", {"limit": 20})
            rows = (r.structured_content or {}).get("receipts", [])
            tools = [row["tool"] for row in reversed(rows)]
            _expect(tools == ["validate_maml", "sign_maml", "verify_maml", "verify_maml"], f"{tools}")
            last = rows[0]
            return (
                f"{len(rows)} receipts for the tool calls so far ({', '.join(tools)}); newest: seq "
                f"{last['seq']} {last['decision']}/{last['outcome']}, result {last['result_digest'][:19]}…"
            )

        async def run_ghz() -> str:
            r = await client.call_tool("run_quantum_circuit", {"circuit": context["signed"], "seed": 7})
            sc = r.structured_content or {}
            _expect(not r.is_error and sc.get("status") == "succeeded", f"{sc}")
            counts = sc["counts"]
            _expect(set(counts) == {"000", "111"} and sum(counts.values()) == sc["shots"], f"{counts}")
            context["job"] = sc
            return (
                f"signed GHZ workflow on the local simulator ({sc['method']}): {counts} "
                f"from {sc['shots']} shots, job {sc['job_id'][:8]}…"
            )

        async def attestation() -> str:
            from mcp_server.ledger.receipts import json_digest

            r = await client.call_tool("list_receipts", {"tool": "run_quantum_circuit", "limit": 1})
            row = (r.structured_content or {})["receipts"][0]
            attested = json.loads(row["attestation"])
            job = context["job"]
            _expect(attested["counts_digest"] == json_digest(job["counts"]), f"{attested}")
            _expect(attested["circuit_digest"] == job["circuit_digest"], f"{attested}")
            mu = await client.read_resource(f"receipts://{row['id']}")
            _expect("counts_digest" in mu.contents[0].text, "the .mu receipt lacks the attestation")  # type: ignore[union-attr]
            return (
                f"receipt {row['seq']} binds circuit {attested['circuit_digest'][:19]}… on "
                f"{attested['backend']}/{attested['target']}, {attested['shots']} shots, seed "
                f"{attested['seed']} to counts {attested['counts_digest'][:19]}…"
            )

        async def run_wide() -> str:
            """A result too large for a context window: summarised, with a link to every count."""
            from mcp_server.ledger.receipts import json_digest

            circuit = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[14];\ncreg c[14];\n'
            circuit += "".join(f"h q[{i}];\n" for i in range(14)) + "measure q -> c;\n"
            r = await client.call_tool("run_quantum_circuit", {"circuit": circuit, "shots": 50000, "seed": 1})
            sc = r.structured_content or {}
            _expect(not r.is_error and sc.get("counts") is None and bool(sc.get("top_counts")), str(sc)[:300])
            links = [c for c in r.content if c.type == "resource_link"]
            _expect(len(links) == 1, "no resource_link to the counts")
            every: dict[str, int] = {}
            uri: str | None = str(links[0].uri)
            pages = 0
            while uri is not None:
                page = json.loads((await client.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
                every.update(page["counts"])
                uri, pages = page["next"], pages + 1
            _expect(json_digest(every) == sc["counts_digest"], "the pages do not add up to the digest")
            size = len(json.dumps(r.structured_content))
            return (
                f"14 qubits, 50,000 shots: {sc['distinct_outcomes']} outcomes summarised in {size:,} bytes "
                f"(top 16 + link); followed {links[0].uri}: {pages} pages, digest matches"
            )

        await step("read unknown workflow", read_missing)
        await step("list_receipts", list_receipts)
        await step("run_quantum_circuit(signed GHZ)", run_ghz)
        await step("quantum receipt attests the run", attestation)
        await step("large result: summary and link", run_wide)

    # A second agent with a narrower token: the policy layer shows and allows it less.
    from mcp_server.auth.local_issuer import mint

    reader = mint(Settings(home=home), sub="reader", scopes=["maml:read"], ttl=300)
    reader_params = StdioServerParameters(
        command=params.command, args=params.args, env={**env, "MACROSLOW_TOKEN": reader}
    )
    t0 = time.perf_counter()
    async with Client(stdio_client(reader_params, errlog=log_file)) as client:
        steps.append(
            Step(
                "second agent: token with maml:read only",
                client.server_info is not None,
                (time.perf_counter() - t0) * 1000,
                "MACROSLOW_TOKEN from `token mint --sub reader --scope maml:read` (ML-DSA-65 JWS)",
            )
        )

        async def reader_tools() -> str:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            _expect(names == ["validate_maml", "verify_maml"], f"tools {names}")
            return f"sees only {', '.join(names)}"

        async def reader_sign() -> str:
            r = await client.call_tool("sign_maml", {"document": example})
            error = error_of(r) or {}
            _expect(r.is_error and error.get("code") == "forbidden", f"sign_maml was not refused: {error}")
            return f"refused: {error['message']}"

        async def reader_verify() -> str:
            r = await client.call_tool("verify_maml", {"document": context["signed"]})
            sc = r.structured_content or {}
            _expect(sc.get("valid") is True, f"{sc}")
            return "allowed: valid and trusted"

        await step("second agent: tools/list", reader_tools)
        await step("second agent: sign_maml", reader_sign)
        await step("second agent: verify_maml", reader_verify)

    async def verify_ledger() -> str:
        from mcp_server.db import open_engine
        from mcp_server.home import open_keys
        from mcp_server.ledger.store import Ledger

        settings = Settings(home=home)
        ledger = Ledger(open_engine(settings.database, durable=True), open_keys(settings))
        try:
            report = ledger.verify()
            denied = ledger.page(decision="denied").receipts
        finally:
            ledger.engine.dispose()
        _expect(report.ok, "; ".join(report.problems))
        _expect(report.verified_size == report.receipts, f"{report.receipts - report.verified_size} unsigned")
        _expect([r.tool for r, _ in denied] == ["sign_maml"], f"denials {[r.tool for r, _ in denied]}")
        return (
            f"{report.receipts} receipts, {report.checkpoints} signed checkpoints, all covered; "
            f"the refused sign_maml is receipt {denied[0][0].seq} (denied)"
        )

    await step("receipts verify (servers stopped)", verify_ledger)


EXPECTED_STEPS = 19


def run_demo(out: TextIO, home: Path | None = None) -> int:
    """Run the demo, writing the report to `out` (the CLI gives its stdout); 0 if every step behaved."""

    def say(text: str = "") -> None:
        out.write(text + "\n")

    with tempfile.TemporaryDirectory(prefix="macroslow-demo-") as tmp:
        home = home or Path(tmp) / "home"
        settings = Settings(home=home)
        report = initialize(settings)
        say(f"macroslow-mcp demo: home {home}")
        say(f"  signing key {report.key_id} ({'encrypted' if report.key_encrypted else 'unencrypted'})")
        steps: list[Step] = []
        log_path = Path(tmp) / "server-stderr.log"
        t0 = time.perf_counter()
        error: str | None = None
        with open(log_path, "w", encoding="utf-8") as log_file:
            try:
                anyio.run(_drive, home, steps, log_file)
            except Exception as exc:  # the server died or the protocol broke: report, don't trace
                error = f"{type(exc).__name__}: {exc}"
        total = (time.perf_counter() - t0) * 1000
        say()
        width = max((len(s.name) for s in steps), default=10)
        for s in steps:
            say(f"  {'ok  ' if s.ok else 'FAIL'} {s.name:<{width}} {s.ms:8.1f} ms  {s.detail}")
        failed = [s for s in steps if not s.ok]
        if error:
            say(f"  FAIL the session broke: {error}")
            server_log = log_path.read_text(encoding="utf-8").strip().splitlines()[-5:]
            for line in server_log:
                say(f"       server: {line}")
        say()
        ok = not failed and error is None and len(steps) == EXPECTED_STEPS
        say(
            f"{'PASS' if ok else 'FAIL'}: {sum(s.ok for s in steps)}/{len(steps)} steps as expected, "
            f"{total:.0f} ms in all"
        )
        return 0 if ok else 1
