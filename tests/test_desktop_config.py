"""claude_desktop_config.example.json starts a working server, the way Claude Desktop would run it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from mcp_server.home import example_workflow

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.subprocess
@pytest.mark.anyio
async def test_example_config_runs(tmp_path: Path) -> None:
    config = json.loads((ROOT / "claude_desktop_config.example.json").read_text())
    entry = config["mcpServers"]["macroslow"]
    command = shutil.which(entry["command"], path=str(Path(sys.executable).parent))
    assert command, "the console script from the config is installed next to this Python"
    env = dict(entry["env"])
    assert env["MACROSLOW_HOME"] == "~/.macroslow"
    # Desktop clients pass env through as given; the server expands `~` against HOME.
    env["HOME"] = str(tmp_path)
    env["PATH"] = os.environ.get("PATH", "")
    async with Client(StdioServerParameters(command=command, args=entry["args"], env=env)) as client:
        result = await client.call_tool("sign_maml", {"document": example_workflow()})
    assert not result.is_error
    assert (tmp_path / ".macroslow" / "keys" / "default").exists()
