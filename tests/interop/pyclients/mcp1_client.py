"""A host built on the official Python MCP SDK 1.x (`mcp<2`): its `ClientSession`, over stdio or
Streamable HTTP. Runs in its own virtualenv (tests/interop/pyvenv.py), so it never imports the
project; the plan arrives as JSON on stdin and the outcome leaves as one JSON document on stdout.

Plan: {"transport": {"kind": "stdio", "command", "args", "env", "cwd"} | {"kind": "http", "url"},
"protocolVersion": null | "2024-11-05" | ..., "tool": {"name", "arguments"}, "resource": uri,
"prompt": {"name", "arguments"}, "completion": {"prompt", "argument", "value"}, "timeoutS": s}

`protocolVersion` replaces the version this SDK asks for in `initialize` (its newest, otherwise), to
see the server negotiate an older revision with a real 1.x client. Each step records `ok` and either
`result` (the SDK's model, dumped by alias, so camelCase as on the wire) or `thrown`; a step that
throws does not stop the others. Only a failure to connect is fatal.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import mcp.types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def dump(value: Any) -> Any:
    return value.model_dump(mode="json", by_alias=True, exclude_none=True)


async def step(awaitable: Awaitable[Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "result": dump(await awaitable)}
    except Exception as exc:
        return {"ok": False, "thrown": f"{type(exc).__name__}: {exc}"}


async def transport(stack: AsyncExitStack, spec: dict[str, Any]) -> tuple[Any, Any]:
    if spec["kind"] == "stdio":
        params = StdioServerParameters(
            command=spec["command"], args=spec["args"], env=spec["env"], cwd=spec.get("cwd")
        )
        read, write = await stack.enter_async_context(stdio_client(params))
        return read, write
    try:  # 1.24+: the httpx-client form; the older factory form is deprecated there
        from mcp.client.streamable_http import streamable_http_client

        read, write, _ = await stack.enter_async_context(streamable_http_client(spec["url"]))
    except ImportError:
        from mcp.client.streamable_http import streamablehttp_client

        read, write, _ = await stack.enter_async_context(streamablehttp_client(spec["url"]))
    return read, write


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    if plan.get("protocolVersion"):
        # ClientSession.initialize reads mcp.types.LATEST_PROTOCOL_VERSION when it sends the request.
        mcp.types.LATEST_PROTOCOL_VERSION = plan["protocolVersion"]
    out: dict[str, Any] = {
        "package": "mcp",
        "version": version("mcp"),
        "requested": plan.get("protocolVersion"),
    }
    async with AsyncExitStack() as stack:
        read, write = await transport(stack, plan["transport"])
        session = await stack.enter_async_context(
            ClientSession(read, write, read_timeout_seconds=timedelta(seconds=plan.get("timeoutS", 60)))
        )
        init = await session.initialize()
        out["negotiated"] = init.protocolVersion
        out["serverInfo"] = dump(init.serverInfo)
        out["capabilities"] = dump(init.capabilities)
        tools = await step(session.list_tools())
        out["tools"] = tools
        tool = plan["tool"]
        out["call"] = await step(session.call_tool(tool["name"], tool["arguments"]))
        out["resource"] = await step(session.read_resource(plan["resource"]))
        out["prompts"] = await step(session.list_prompts())
        prompt = plan["prompt"]
        out["prompt"] = await step(session.get_prompt(prompt["name"], prompt["arguments"]))
        completion = plan["completion"]
        out["completion"] = await step(
            session.complete(
                mcp.types.PromptReference(type="ref/prompt", name=completion["prompt"]),
                {"name": completion["argument"], "value": completion["value"]},
            )
        )
    return out


def main() -> None:
    plan = json.load(sys.stdin)
    try:
        out = asyncio.run(run(plan))
    except BaseException as exc:  # a failed connect or handshake: nothing else to report
        out = {"fatal": f"{type(exc).__name__}: {exc!r}"}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
