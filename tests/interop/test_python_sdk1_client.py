"""The server as hosts still on the official Python MCP SDK 1.x see it: its `ClientSession`, over stdio
and Streamable HTTP (`serve --no-auth`), asking for the older protocol revisions too.

The 1.x SDK is installed by the test run itself, into its own virtualenv under tests/interop/.cache/
(pinned below; reused by later runs), and drives the server through pyclients/mcp1_client.py. One
client run per (transport, protocol version), all at once; the tests below check what each saw:
the handshake, tools/list, a tools/call of validate_maml with the bundled example, resources/read of
maml://workflows, prompts/list and prompts/get of write_workflow, and completion/complete for
run_workflow's workflow_id argument.

The prompts and completions are newer than the rest of the server: while the server lists no
`write_workflow` / `run_workflow` prompt (or declares no `completions` capability), those two checks
skip and say so; they run by themselves once the server has them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from mcp_server.home import example_workflow, initialize
from mcp_server.settings import Settings
from tests.interop.pyvenv import Venv, cached_venv, run_script
from tests.server.test_transports import SERVE, _env, start_server

pytestmark = [pytest.mark.subprocess, pytest.mark.interop]

# The newest 1.x release that installs on Python 3.11 (1.30.0: its newest revision is 2025-11-25).
MCP1 = "mcp==1.30.0"
SDK_LATEST = "2025-11-25"
# (transport, the revision the client asks for; None: the SDK's own newest). Streamable HTTP is
# from 2025-03-26 on, so the oldest revision is asked over stdio only.
RUNS = [
    ("stdio", None),
    ("stdio", "2025-06-18"),
    ("stdio", "2024-11-05"),
    ("streamable-http", None),
    ("streamable-http", "2025-03-26"),
]
IDS = [f"{transport}-{version or 'sdk-default'}" for transport, version in RUNS]
EXAMPLE_ID = re.search(r'^id: "([^"]+)"', example_workflow(), re.MULTILINE).group(1)  # type: ignore[union-attr]
INTENT = "Prepare a Bell pair on two qubits and measure both, 500 shots"
CORE_TOOLS = {"validate_maml", "sign_maml", "verify_maml", "list_receipts"}


def plan(transport: dict[str, Any], version: str | None) -> dict[str, Any]:
    return {
        "transport": transport,
        "protocolVersion": version,
        "tool": {"name": "validate_maml", "arguments": {"document": example_workflow()}},
        "resource": "maml://workflows",
        "prompt": {"name": "write_workflow", "arguments": {"intent": INTENT}},
        # The example's id, cut short: a completion of workflow_id should offer the whole id.
        "completion": {"prompt": "run_workflow", "argument": "workflow_id", "value": EXAMPLE_ID[:13]},
        "timeoutS": 60,
    }


@pytest.fixture(scope="session")
def mcp1_venv() -> Venv:
    return cached_venv("mcp1", [MCP1])


@pytest.fixture(scope="module")
def outputs(mcp1_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("mcp1")
    home = base / "home"
    initialize(Settings(home=home, _env_file=None))  # type: ignore[call-arg]  # keys and the example
    server = cast(Generator[str], start_server(base, "streamable-http", "--no-auth"))
    url = f"{next(server)}/mcp"
    stdio = {
        "kind": "stdio",
        "command": SERVE[0],
        "args": [*SERVE[1:], "--transport", "stdio"],
        "env": _env(home),
        "cwd": str(base),
    }
    plans = [
        plan(stdio if transport == "stdio" else {"kind": "http", "url": url}, version)
        for transport, version in RUNS
    ]
    try:
        with ThreadPoolExecutor(max_workers=len(plans)) as pool:
            done = list(pool.map(lambda p: run_script(mcp1_venv, "mcp1_client.py", p), plans))
    finally:
        server.close()
    for name, output in zip(IDS, done, strict=True):  # for a look after a failure
        (base / f"client-{name}.json").write_text(json.dumps(output, indent=2))
    yield dict(zip(IDS, done, strict=True))


def result(output: dict[str, Any], step: str) -> dict[str, Any]:
    entry = output[step]
    assert entry["ok"], f"mcp {output['version']}: {step}: the 1.x client threw: {entry['thrown']}"
    answer: dict[str, Any] = entry["result"]
    return answer


def listed_prompts(output: dict[str, Any]) -> set[str]:
    return {p["name"] for p in result(output, "prompts").get("prompts", [])}


@pytest.mark.parametrize(("run", "version"), [(i, v) for i, (_, v) in zip(IDS, RUNS, strict=True)], ids=IDS)
def test_handshake_negotiates_the_asked_revision(
    outputs: dict[str, dict[str, Any]], run: str, version: str | None
) -> None:
    output = outputs[run]
    assert output["version"] == MCP1.split("==")[1]
    assert output["negotiated"] == (version or SDK_LATEST), output
    assert output["serverInfo"]["name"] == "macroslow-mcp"
    assert {"tools", "resources"} <= set(output["capabilities"]), output["capabilities"]


@pytest.mark.parametrize("run", IDS)
def test_lists_tools(outputs: dict[str, dict[str, Any]], run: str) -> None:
    tools = result(outputs[run], "tools")["tools"]
    assert {t["name"] for t in tools} >= CORE_TOOLS
    validate = next(t for t in tools if t["name"] == "validate_maml")
    assert validate["inputSchema"]["type"] == "object" and "document" in validate["inputSchema"]["properties"]


@pytest.mark.parametrize("run", IDS)
def test_calls_validate_maml(outputs: dict[str, dict[str, Any]], run: str) -> None:
    """The 1.x client checks structuredContent against the outputSchema it got from tools/list (it
    would throw on a mismatch); the text content carries the same report as JSON, for hosts on
    revisions without structured content."""
    answer = result(outputs[run], "call")
    assert answer.get("isError") is not True, answer
    assert answer["structuredContent"]["valid"] is True, answer
    [text] = [c["text"] for c in answer["content"] if c["type"] == "text"]
    assert json.loads(text)["valid"] is True


@pytest.mark.parametrize("run", IDS)
def test_reads_the_workflows_resource(outputs: dict[str, dict[str, Any]], run: str) -> None:
    [content] = result(outputs[run], "resource")["contents"]
    assert content["uri"] == "maml://workflows" and content["mimeType"] == "application/json", content
    listed = json.loads(content["text"])["workflows"]
    assert EXAMPLE_ID in {w["id"] for w in listed}, listed


@pytest.mark.parametrize("run", IDS)
def test_gets_the_write_workflow_prompt(outputs: dict[str, dict[str, Any]], run: str) -> None:
    output = outputs[run]
    if "write_workflow" not in listed_prompts(output):  # prompts/list itself must be answered
        pytest.skip("the server lists no prompt write_workflow yet (prompts/ is being added)")
    answer = result(output, "prompt")
    messages = answer["messages"]
    assert messages and all(m["role"] in ("user", "assistant") for m in messages), answer
    text = "\n".join(m["content"].get("text", "") for m in messages)
    assert INTENT in text, f"the intent argument is not in the prompt's messages: {answer}"


@pytest.mark.parametrize("run", IDS)
def test_completes_run_workflow_workflow_id(outputs: dict[str, dict[str, Any]], run: str) -> None:
    output = outputs[run]
    if "run_workflow" not in listed_prompts(output) or "completions" not in output["capabilities"]:
        pytest.skip(
            "the server lists no prompt run_workflow or declares no completions capability yet "
            "(mcp_server/completions.py is being added)"
        )
    completion = result(output, "completion")["completion"]
    assert isinstance(completion["values"], list), completion
    assert EXAMPLE_ID in completion["values"], (
        f"completing workflow_id from {EXAMPLE_ID[:13]!r} should offer the example's id: {completion}"
    )
