"""The prompts from the real server in a child process, over stdio, with the official client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import PromptReference, TextContent

from mcp_server.home import example_workflow

pytestmark = [pytest.mark.subprocess, pytest.mark.anyio]


async def test_stdio_lists_gets_and_completes_prompts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
    env["MACROSLOW_HOME"] = str(tmp_path / "home")
    (tmp_path / "home" / "workflows").mkdir(parents=True)
    (tmp_path / "home" / "workflows" / "ghz.maml.md").write_text(example_workflow(), encoding="utf-8")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server", "serve", "--transport", "stdio"], env=env
    )
    async with Client(params) as client:
        listed = {p.name: p.title for p in (await client.list_prompts()).prompts}
        written = await client.get_prompt("write_workflow", {"intent": "a coin toss"})
        completed = await client.complete(
            PromptReference(name="run_workflow"), {"name": "workflow_id", "value": "gh"}
        )
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("nope")
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("run_workflow", {})
    assert listed == {
        "audit_my_calls": "Audit my recent calls",
        "run_workflow": "Sign and run a workflow",
        "write_workflow": "Write a MAML workflow",
    }
    text = "\n".join(m.content.text for m in written.messages if isinstance(m.content, TextContent))
    assert "a coin toss" in text and "validate_maml" in text
    assert str(tmp_path) not in text
    assert completed.completion.values == ["ghz"] and completed.completion.total == 1
    assert unknown.value.code == missing.value.code == -32602


def test_handshake_era_wire_answers_invalid_params(tmp_path: Path) -> None:
    """On the 2025-06-18 wire (where the SDK's own prompt errors went out as code 0) an unknown
    prompt, a missing argument and completing an unknown prompt answer -32602."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
    env["MACROSLOW_HOME"] = str(tmp_path / "home")
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": "nope"}},
        {"jsonrpc": "2.0", "id": 3, "method": "prompts/get", "params": {"name": "write_workflow"}},
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "completion/complete",
            "params": {"ref": {"type": "ref/prompt", "name": "nope"}, "argument": {"name": "x", "value": ""}},
        },
        {"jsonrpc": "2.0", "id": 5, "method": "prompts/list"},
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "serve", "--transport", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write("".join(json.dumps(r) + "\n" for r in requests).encode())
    proc.stdin.flush()
    by_id: dict[int, dict[str, Any]] = {}
    while len(by_id) < 5:  # stdin stays open until every request is answered
        line = proc.stdout.readline()
        assert line, "server closed stdout early"
        message = json.loads(line)
        if "id" in message:
            by_id[message["id"]] = message
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    stderr = proc.stderr.read()
    assert by_id[1]["result"]["capabilities"]["prompts"] is not None
    assert "completions" in by_id[1]["result"]["capabilities"]
    assert [by_id[i]["error"]["code"] for i in (2, 3, 4)] == [-32602, -32602, -32602]
    assert "'intent'" in by_id[3]["error"]["message"]
    assert len(by_id[5]["result"]["prompts"]) == 3
    assert b"Traceback" not in stderr
