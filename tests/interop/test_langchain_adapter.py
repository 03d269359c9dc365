"""The server as an agent framework sees it: LangChain's MCP adapter (`langchain-mcp-adapters`,
`MultiServerMCPClient`), with the server over stdio, no model involved.

Of the three adapters considered (langchain-mcp-adapters, pydantic-ai's MCP client, openai-agents'
MCP support), all install on Python 3.11 here; LangChain's is the one whose adapter covers tools,
resources and prompts, and it runs on the 1.x Python SDK (pydantic-ai and openai-agents bring the
2.x SDK the server itself is built on, which tests/server already drives).

The adapter is installed by the test run itself into its own virtualenv under tests/interop/.cache/
(pins below; reused by later runs) and driven through pyclients/langchain_client.py. The install
is skipped, with pip's words, when the registry cannot be reached.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from mcp_server.home import example_workflow, initialize
from mcp_server.settings import Settings
from tests.interop.pyvenv import Venv, cached_venv, run_script
from tests.server.test_transports import SERVE, _env

pytestmark = [pytest.mark.subprocess, pytest.mark.interop]

# The adapter and the two packages its behaviour here depends on, pinned together.
REQUIREMENTS = ["langchain-mcp-adapters==0.3.2", "langchain-core==1.8.3", "mcp==1.30.0"]
EXAMPLE_ID = re.search(r'^id: "([^"]+)"', example_workflow(), re.MULTILINE).group(1)  # type: ignore[union-attr]
INTENT = "Prepare a Bell pair on two qubits and measure both, 500 shots"


@pytest.fixture(scope="session")
def langchain_venv() -> Venv:
    return cached_venv("langchain-mcp", REQUIREMENTS)


@pytest.fixture(scope="module")
def output(langchain_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("langchain")
    home = base / "home"
    initialize(Settings(home=home, _env_file=None))  # type: ignore[call-arg]  # keys and the example
    plan = {
        "connection": {
            "transport": "stdio",
            "command": SERVE[0],
            "args": [*SERVE[1:], "--transport", "stdio"],
            "env": _env(home),
            "cwd": str(base),
        },
        "tool": {"name": "validate_maml", "arguments": {"document": example_workflow()}},
        "failing_tool": {"name": "sign_maml", "arguments": {}},
        "resource": "maml://workflows",
        "prompt": {"name": "write_workflow", "arguments": {"intent": INTENT}},
        "completion": {"prompt": "run_workflow", "argument": "workflow_id", "value": EXAMPLE_ID[:13]},
    }
    out = run_script(langchain_venv, "langchain_client.py", plan, timeout=150)
    (base / "client.json").write_text(json.dumps(out, indent=2, default=repr))
    yield out


def result(output: dict[str, Any], step: str) -> Any:
    entry = output[step]
    assert entry["ok"], f"langchain-mcp-adapters {output['version']}: {step} threw: {entry['thrown']}"
    return entry["result"]


def test_installed_the_pinned_versions(output: dict[str, Any]) -> None:
    assert output["version"] == "0.3.2"
    assert output["versions"] == {"langchain-core": "1.8.3", "mcp": "1.30.0"}


def test_tools_as_langchain_sees_them(output: dict[str, Any]) -> None:
    tools = {t["name"]: t for t in output["tools"]}
    assert {"validate_maml", "sign_maml", "verify_maml", "list_receipts"} <= set(tools)
    validate = tools["validate_maml"]
    assert validate["description"], validate
    assert validate["args_schema"]["type"] == "object" and "document" in validate["args_schema"]["properties"]


def test_tool_run_as_an_agent_runs_it(output: dict[str, Any]) -> None:
    """The model would see the text content; the structured content rides along as the artifact."""
    msg = result(output, "call")
    assert msg["status"] == "success", msg
    assert msg["structured_content"]["valid"] is True, msg
    [block] = msg["content"]
    assert block["type"] == "text" and json.loads(block["text"])["valid"] is True, msg


def test_error_result_reaches_the_model(output: dict[str, Any]) -> None:
    """sign_maml without a document: an error result, which the adapter hands the model as a
    status="error" message (it does not raise), starting with the stable code."""
    msg = result(output, "failing_call")
    assert msg["status"] == "error", msg
    assert "invalid_document: " in json.dumps(msg["content"]), msg


def test_reads_the_workflows_resource(output: dict[str, Any]) -> None:
    [blob] = result(output, "resource")
    assert blob["mimetype"] == "application/json", blob
    assert blob["metadata"]["uri"] == "maml://workflows", blob
    assert EXAMPLE_ID in {w["id"] for w in json.loads(blob["text"])["workflows"]}


def test_gets_the_write_workflow_prompt(output: dict[str, Any]) -> None:
    if "write_workflow" not in result(output, "prompts")["names"]:
        pytest.skip("the server lists no prompt write_workflow yet (prompts/ is being added)")
    messages = result(output, "prompt")
    assert messages and {m["type"] for m in messages} <= {"human", "ai"}, messages
    assert INTENT in "\n".join(m["content"] for m in messages), messages


def test_completes_run_workflow_workflow_id(output: dict[str, Any]) -> None:
    listed = result(output, "prompts")
    if "run_workflow" not in listed["names"] or "completions" not in listed["capabilities"]:
        pytest.skip(
            "the server lists no prompt run_workflow or declares no completions capability yet "
            "(mcp_server/completions.py is being added)"
        )
    completion = result(output, "completion")
    assert EXAMPLE_ID in completion["values"], completion
