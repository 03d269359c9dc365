"""The official MCP conformance suite's server scenarios, against this server over Streamable HTTP.

    .venv/bin/python bench/conformance.py [--scenario NAME]... [--url URL] [--json FILE] [--keep DIR]

exit 0: every scenario that applies to the server passes; 1: one that applies did not; 2: broken run
(npm missing, install failed, the server did not start, the suite printed no results).

What it does:
1. Installs Node 22 (the npm package `node`, which brings its own binary) and the suite (npm
   `@modelcontextprotocol/conformance`), both pinned in tests/interop/conformance/package.json and
   its lockfile, with `npm ci` into tests/interop/conformance/node_modules (git-ignored); skipped on
   later runs while the lockfile is unchanged. Needs `npm` on PATH (any Node.js that has npm).
2. Starts `macroslow-mcp serve --transport streamable-http --no-auth` on a free loopback port, with
   a fresh home in a temporary directory (the suite's client sends no bearer token), unless --url
   names a running server.
3. Asks the server itself what it offers (initialize, tools/list, prompts/list, resources/list,
   resources/templates/list; whether it hands out an Mcp-Session-Id).
4. Runs `conformance server --url URL --suite all` (or each --scenario), which writes a checks.json
   per scenario, and prints one row per scenario: the suite's outcome and the verdict.

Most server scenarios test the suite's own fixture server (tools named test_simple_text,
test_image_content, ..., resources under test://, prompts named test_*): they call those names and
judge the answers. Such a scenario applies only to a server that offers the fixture (REQUIRES
below, read from the suite's sources at the pinned version); for this server it is `n/a`, whatever
the suite printed. Some of them "pass" here by accident (tools-call-simple-text accepts the text of
the unknown-tool error result; tools-call-error accepts any isError result), so the verdict never
takes the suite's word for a scenario whose fixture is missing. A scenario also needs the server
to declare the capability it exercises (logging/setLevel needs `logging`): a server that does not
declare it answers -32601, as the spec wants. The verdict for a scenario that applies is the
suite's: pass (a SUCCESS check and no FAILURE), fail (a FAILURE check), warn (WARNING checks only).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUITE_DIR = PROJECT_ROOT / "tests" / "interop" / "conformance"
STAMP = SUITE_DIR / "node_modules" / ".macroslow-lock.sha256"
SUITE_JS = SUITE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
NODE = SUITE_DIR / "node_modules" / ".bin" / "node"
NODE_MAJOR = 22
PROTOCOL = "2025-11-25"
SERVE = [sys.executable, "-m", "mcp_server", "serve"]
START_TIMEOUT_S = 60.0
SUITE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Needs:
    """What a scenario needs the server to offer before its outcome says anything about the server."""

    tools: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()  # dotted: "resources.subscribe"
    session: bool = False  # an Mcp-Session-Id from initialize (a stateful server)


# The server scenarios of @modelcontextprotocol/conformance 0.1.16 (src/scenarios/server/*.ts).
REQUIRES: dict[str, Needs] = {
    "server-initialize": Needs(),
    "ping": Needs(),
    "dns-rebinding-protection": Needs(),
    "tools-list": Needs(capabilities=("tools",)),
    "resources-list": Needs(capabilities=("resources",)),
    "prompts-list": Needs(capabilities=("prompts",)),
    "logging-set-level": Needs(capabilities=("logging",)),
    "completion-complete": Needs(capabilities=("completions",), prompts=("test_prompt_with_arguments",)),
    "tools-call-simple-text": Needs(tools=("test_simple_text",)),
    "tools-call-image": Needs(tools=("test_image_content",)),
    "tools-call-audio": Needs(tools=("test_audio_content",)),
    "tools-call-embedded-resource": Needs(tools=("test_embedded_resource",)),
    "tools-call-mixed-content": Needs(tools=("test_multiple_content_types",)),
    "tools-call-with-logging": Needs(tools=("test_tool_with_logging",), capabilities=("logging",)),
    "tools-call-error": Needs(tools=("test_error_handling",)),
    "tools-call-with-progress": Needs(tools=("test_tool_with_progress",)),
    "tools-call-sampling": Needs(tools=("test_sampling",)),
    "tools-call-elicitation": Needs(tools=("test_elicitation",)),
    "json-schema-2020-12": Needs(tools=("json_schema_2020_12_tool",)),
    "elicitation-sep1034-defaults": Needs(tools=("test_elicitation_sep1034_defaults",)),
    "elicitation-sep1330-enums": Needs(tools=("test_elicitation_sep1330_enums",)),
    "server-sse-polling": Needs(tools=("test_reconnection",)),
    "server-sse-multiple-streams": Needs(session=True),
    "resources-read-text": Needs(resources=("test://static-text",)),
    "resources-read-binary": Needs(resources=("test://static-binary",)),
    "resources-templates-read": Needs(templates=("test://template/{id}/data",)),
    "resources-subscribe": Needs(
        resources=("test://watched-resource",), capabilities=("resources.subscribe",)
    ),
    "resources-unsubscribe": Needs(
        resources=("test://watched-resource",), capabilities=("resources.subscribe",)
    ),
    "prompts-get-simple": Needs(prompts=("test_simple_prompt",)),
    "prompts-get-with-args": Needs(prompts=("test_prompt_with_arguments",)),
    "prompts-get-embedded-resource": Needs(prompts=("test_prompt_with_embedded_resource",)),
    "prompts-get-with-image": Needs(prompts=("test_prompt_with_image",)),
}


class BenchError(Exception):
    """The run itself broke (exit 2)."""


@dataclass
class Offer:
    """What the server under test offers, as it says itself."""

    server: dict[str, Any]
    protocol: str
    capabilities: dict[str, Any]
    session: bool
    tools: set[str] = field(default_factory=set)
    prompts: set[str] = field(default_factory=set)
    resources: set[str] = field(default_factory=set)
    templates: set[str] = field(default_factory=set)

    def has_capability(self, dotted: str) -> bool:
        node: Any = self.capabilities
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node or node[part] in (None, False):
                return False
            node = node[part]
        return True

    def missing(self, needs: Needs) -> list[str]:
        """Why a scenario with these needs does not apply here (empty: it applies)."""
        why = [f"capability {c} (not declared)" for c in needs.capabilities if not self.has_capability(c)]
        why += [f"fixture tool {t}" for t in needs.tools if t not in self.tools]
        why += [f"fixture prompt {p}" for p in needs.prompts if p not in self.prompts]
        why += [f"fixture resource {r}" for r in needs.resources if r not in self.resources]
        why += [f"fixture template {t}" for t in needs.templates if t not in self.templates]
        if needs.session and not self.session:
            why.append("an Mcp-Session-Id (the server is stateless)")
        return why


@dataclass
class Row:
    scenario: str
    spec_versions: str
    suite: str  # pass | fail | warn | missing
    verdict: str  # pass | fail | warn | n/a | missing
    note: str
    checks: list[dict[str, Any]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/conformance.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this server scenario (repeatable; default: every scenario, --suite all)",
    )
    parser.add_argument("--url", help="test the server already running at this Streamable HTTP URL")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows and versions here")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the suite's per-scenario results here")
    parser.add_argument("--skip-install", action="store_true", help="use node_modules as installed")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenario if s not in REQUIRES]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(REQUIRES)}")
    return args


# -- install ------------------------------------------------------------------------------------


def install() -> None:
    """`npm ci` in tests/interop/conformance unless node_modules matches the lockfile already."""
    lock = hashlib.sha256((SUITE_DIR / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == lock and NODE.exists() and SUITE_JS.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("npm is not on PATH: install Node.js with npm (any version) to fetch Node 22")
    print(f"installing Node {NODE_MAJOR} and the suite: npm ci in {SUITE_DIR.relative_to(PROJECT_ROOT)}")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=SUITE_DIR, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0 or not NODE.exists():
        raise BenchError(
            f"npm ci failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    STAMP.write_text(lock)


def versions() -> dict[str, str]:
    node = subprocess.run([str(NODE), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if not node.startswith(f"v{NODE_MAJOR}."):
        raise BenchError(f"{NODE} is {node}, not Node {NODE_MAJOR}")
    suite = json.loads((SUITE_JS.parent.parent / "package.json").read_text())["version"]
    return {"node": node, "conformance": suite}


# -- the server -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def our_server(workdir: Path) -> Iterator[str]:
    """`serve --transport streamable-http --no-auth` with a fresh home; yields its /mcp URL."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from mcp_server.home import initialize
    from mcp_server.settings import Settings

    home = workdir / "home"
    initialize(Settings(home=home, _env_file=None))  # type: ignore[call-arg]  # keys, the example workflow
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
    env["MACROSLOW_HOME"] = str(home)
    port = _free_port()
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*SERVE, "--transport", "streamable-http", "--no-auth", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise BenchError(
                        f"the server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
                    )
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise BenchError(f"the server did not listen within {START_TIMEOUT_S} s") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _rpc(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[dict[str, Any] | None, Any]:
    """POST one JSON-RPC message; (the response message or None for a notification, headers)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback or the --url given
        raw = response.read().decode()
        if "id" not in body:
            return None, response.headers
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            for line in raw.splitlines():
                if line.startswith("data:") and line[5:].strip():
                    message = json.loads(line[5:])
                    if message.get("id") == body["id"]:
                        return message, response.headers
            raise BenchError(f"no answer to {body['method']} in the event stream: {raw[:500]}")
        return json.loads(raw), response.headers


def probe(url: str) -> Offer:
    """Initialize, then list what the server offers, as a plain client would."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "bench-conformance-probe", "version": "0"},
        },
    }
    try:
        answer, headers = _rpc(url, init, {})
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"initialize at {url} failed: {exc}") from exc
    assert answer is not None
    if "result" not in answer:
        raise BenchError(f"initialize at {url} answered {answer}")
    result = answer["result"]
    session = headers.get("mcp-session-id")
    sent = {
        "mcp-protocol-version": result["protocolVersion"],
        **({"mcp-session-id": session} if session else {}),
    }
    _rpc(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sent)
    offer = Offer(
        result.get("serverInfo", {}), result["protocolVersion"], result["capabilities"], bool(session)
    )
    lists = [
        ("tools", "tools/list", "tools", "name", offer.tools),
        ("prompts", "prompts/list", "prompts", "name", offer.prompts),
        ("resources", "resources/list", "resources", "uri", offer.resources),
        ("resources", "resources/templates/list", "resourceTemplates", "uriTemplate", offer.templates),
    ]
    for n, (capability, method, key, name, into) in enumerate(lists, start=2):
        if capability not in offer.capabilities:
            continue
        cursor: str | None = None
        while True:
            params: dict[str, str] = {"cursor": cursor} if cursor else {}
            listed, _ = _rpc(url, {"jsonrpc": "2.0", "id": n, "method": method, "params": params}, sent)
            assert listed is not None
            if "result" not in listed:
                raise BenchError(f"{method} answered {listed}")
            into.update(item[name] for item in listed["result"].get(key, []))
            cursor = listed["result"].get("nextCursor")
            if not cursor:
                break
    return offer


# -- the suite ------------------------------------------------------------------------------------

SCENARIO_LINE = re.compile(r"^\s*-\s+(?P<name>\S+)\s+\[(?P<versions>[^\]]*)\]")
RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d\d-\d\dT[\d-]+Z$")


def suite(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NODE), str(SUITE_JS), *args], cwd=cwd, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S
    )


def listed_scenarios(cwd: Path) -> dict[str, str]:
    """scenario -> the spec versions it is for, as `conformance list --server` prints them."""
    done = suite("list", "--server", cwd=cwd)
    found = {m["name"]: m["versions"] for m in map(SCENARIO_LINE.match, done.stdout.splitlines()) if m}
    if not found:
        raise BenchError(f"`conformance list --server` listed nothing:\n{done.stdout}\n{done.stderr}")
    return found


def outcome(checks: list[dict[str, Any]]) -> str:
    statuses = {c.get("status") for c in checks}
    if "FAILURE" in statuses:
        return "fail"
    if "SUCCESS" in statuses:
        return "pass"
    return "warn" if "WARNING" in statuses else "missing"


def run_suite(url: str, scenarios: list[str], out: Path) -> dict[str, list[dict[str, Any]]]:
    """Run the scenarios (all of them when none are named); scenario -> its checks."""
    runs = [["--scenario", s] for s in scenarios] or [["--suite", "all"]]
    for extra in runs:
        done = suite("server", "--url", url, "-o", str(out), *extra, cwd=out)
        with (out / "suite.log").open("a") as log:
            log.write(done.stdout + done.stderr)
    results: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("server-*/checks.json")):
        match = RESULT_DIR.match(path.parent.name)
        if match:
            results[match["name"]] = json.loads(path.read_text())
    if not results:
        raise BenchError(
            f"the suite wrote no checks.json under {out}:\n{(out / 'suite.log').read_text()[-3000:]}"
        )
    return results


def judge(scenarios: dict[str, str], results: dict[str, list[dict[str, Any]]], offer: Offer) -> list[Row]:
    rows = []
    for name, spec_versions in scenarios.items():
        checks = results.get(name, [])
        said = outcome(checks) if name in results else "missing"
        needs = REQUIRES.get(name)
        failed = "; ".join(c.get("errorMessage", "") for c in checks if c.get("status") == "FAILURE")
        if needs is None:  # a scenario this script does not know: judged as applying, and flagged
            rows.append(Row(name, spec_versions, said, said, "not in REQUIRES: classify it", checks))
        elif missing := offer.missing(needs):
            rows.append(Row(name, spec_versions, said, "n/a", "needs " + ", ".join(missing), checks))
        else:
            rows.append(Row(name, spec_versions, said, said, failed[:160], checks))
    return rows


def table(rows: list[Row]) -> str:
    head = ("scenario", "spec versions", "suite", "verdict", "why / failure")
    cells = [head] + [(r.scenario, r.spec_versions, r.suite, r.verdict, r.note) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(head[4]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.skip_install:
            install()
        found = versions()
        with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
            work = Path(tmp)
            out = args.keep.resolve() if args.keep else work / "results"
            out.mkdir(parents=True, exist_ok=True)
            scenarios = listed_scenarios(work)
            if args.scenario:
                scenarios = {s: scenarios.get(s, "?") for s in args.scenario}
            if args.url:
                offer = probe(args.url)
                results = run_suite(args.url, list(args.scenario), out)
            else:
                with our_server(work) as url:
                    offer = probe(url)
                    results = run_suite(url, list(args.scenario), out)
    except (BenchError, subprocess.SubprocessError) as exc:
        print(f"broken run: {exc}", file=sys.stderr)
        return 2
    rows = judge(scenarios, results, offer)
    server = f"{offer.server.get('name')} {offer.server.get('version')}"
    print(
        f"\n{datetime.date.today().isoformat()}: @modelcontextprotocol/conformance {found['conformance']} "
        f"on Node {found['node']}, against {server} (protocol {offer.protocol}, "
        f"{'stateful' if offer.session else 'stateless'})\n"
    )
    print(table(rows))
    counts = {v: sum(r.verdict == v for r in rows) for v in ("pass", "fail", "warn", "missing", "n/a")}
    print("\n" + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.date.today().isoformat(),
                    **found,
                    "server": offer.server,
                    "protocol": offer.protocol,
                    "capabilities": offer.capabilities,
                    "rows": [r.__dict__ for r in rows],
                },
                indent=2,
            )
        )
    applies = [r for r in rows if r.verdict != "n/a"]
    return 0 if applies and all(r.verdict == "pass" for r in applies) else 1


if __name__ == "__main__":
    sys.exit(main())
