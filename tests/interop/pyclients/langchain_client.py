"""An agent framework's MCP adapter: LangChain's `langchain-mcp-adapters` (`MultiServerMCPClient`), with
the server over stdio. Runs in its own virtualenv (tests/interop/pyvenv.py), never importing the
project; the plan arrives as JSON on stdin, the outcome leaves as one JSON document on stdout.

Plan: {"connection": the adapter's stdio connection dict, "tool": {"name", "arguments"},
"failing_tool": {"name", "arguments"}, "resource": uri, "prompt": {"name", "arguments"},
"completion": {"prompt", "argument", "value"}}

What an agent would get, without a model: the tools as LangChain `BaseTool`s (name, description,
args schema), a tool run the way an agent's tool node runs it (a `ToolCall` in, a `ToolMessage` out,
the structured content as its artifact), a failing call (the adapter hands the model a
`status="error"` message rather than raising), the resource as LangChain `Blob`s, the prompt as
LangChain messages. The adapter has no completion API: that step goes through the adapter's own
`session()` (an initialized 1.x `ClientSession`). Each step records `ok` and `result` or `thrown`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import mcp.types
from langchain_core.messages import ToolMessage
from langchain_mcp_adapters.client import MultiServerMCPClient

SERVER = "macroslow"


async def step(make: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    try:
        return {"ok": True, "result": await make()}
    except Exception as exc:
        return {"ok": False, "thrown": f"{type(exc).__name__}: {exc}"}


def message(msg: ToolMessage) -> dict[str, Any]:
    artifact = msg.artifact
    structured = artifact.get("structured_content") if isinstance(artifact, dict) else None
    return {"status": msg.status, "content": msg.content, "structured_content": structured}


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    client = MultiServerMCPClient({SERVER: plan["connection"]})
    out: dict[str, Any] = {
        "package": "langchain-mcp-adapters",
        "version": version("langchain-mcp-adapters"),
        "versions": {name: version(name) for name in ("langchain-core", "mcp")},
    }
    tools = await client.get_tools(server_name=SERVER)
    by_name = {tool.name: tool for tool in tools}
    out["tools"] = [
        {"name": t.name, "description": t.description, "args_schema": t.args_schema} for t in tools
    ]

    async def run_tool(spec: dict[str, Any], call_id: str) -> dict[str, Any]:
        # As a LangGraph ToolNode does: a ToolCall in, a ToolMessage (content + artifact) out.
        call = {"type": "tool_call", "id": call_id, "name": spec["name"], "args": spec["arguments"]}
        return message(await by_name[spec["name"]].ainvoke(call))

    out["call"] = await step(lambda: run_tool(plan["tool"], "call-1"))
    out["failing_call"] = await step(lambda: run_tool(plan["failing_tool"], "call-2"))

    async def resource() -> list[dict[str, Any]]:
        blobs = await client.get_resources(SERVER, uris=plan["resource"])
        return [{"text": b.as_string(), "mimetype": b.mimetype, "metadata": b.metadata} for b in blobs]

    out["resource"] = await step(resource)

    async def prompts() -> dict[str, Any]:
        async with client.session(SERVER) as session:
            caps = session.get_server_capabilities()
            names = [p.name for p in (await session.list_prompts()).prompts]
        assert caps is not None
        return {
            "names": names,
            "capabilities": caps.model_dump(mode="json", by_alias=True, exclude_none=True),
        }

    out["prompts"] = await step(prompts)

    async def prompt() -> list[dict[str, Any]]:
        spec = plan["prompt"]
        messages = await client.get_prompt(SERVER, spec["name"], arguments=spec["arguments"])
        return [{"type": m.type, "content": m.content} for m in messages]

    out["prompt"] = await step(prompt)

    async def complete() -> dict[str, Any]:
        spec = plan["completion"]
        async with client.session(SERVER) as session:
            answer = await session.complete(
                mcp.types.PromptReference(type="ref/prompt", name=spec["prompt"]),
                {"name": spec["argument"], "value": spec["value"]},
            )
        return answer.completion.model_dump(mode="json", by_alias=True, exclude_none=True)

    out["completion"] = await step(complete)
    return out


def main() -> None:
    plan = json.load(sys.stdin)
    try:
        out = asyncio.run(run(plan))
    except BaseException as exc:  # could not start the server or list its tools
        out = {"fatal": f"{type(exc).__name__}: {exc!r}"}
    json.dump(out, sys.stdout, default=repr)


if __name__ == "__main__":
    main()
