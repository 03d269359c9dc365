"""A tasks-extension requester on the SDK's own client extension API (`mcp.client.extension`): it
declares `io.modelcontextprotocol/tasks`, claims `resultType: "task"` on `tools/call`, and sends
`tasks/get`, `tasks/update` and `tasks/cancel` as plain requests. Used to drive the server in tests;
interoperability with a requester others wrote is tests/interop (the TypeScript ext-tasks package)."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from mcp.client import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp_types import CallToolResult, Request, RequestParams, Result
from pydantic import ConfigDict

TASKS = "io.modelcontextprotocol/tasks"


class TaskHandle(Result):
    """`CreateTaskResult`: a Task with `resultType: "task"`."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None
    status_message: str | None = None


class TaskState(Result):
    """A `tasks/get` answer (a DetailedTask), extra fields kept."""

    model_config = ConfigDict(extra="allow")


class Empty(Result):
    model_config = ConfigDict(extra="allow")


class TaskParams(RequestParams):
    model_config = ConfigDict(extra="allow")
    task_id: str


class TaskRequest(Request[TaskParams, str]):
    name_param = "taskId"


async def _refuse(handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:  # pragma: no cover
    raise AssertionError("call tools with allow_claimed=True in these tests")


class TasksRequester(ClientExtension):
    identifier = TASKS

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=_refuse)]


async def call(client: Client, name: str, arguments: dict[str, Any]) -> Any:
    """`tools/call`, returning the result or the task handle as sent."""
    return await client.session.call_tool(name, arguments, allow_claimed=True)


async def send(client: Client, method: str, task_id: str, **params: Any) -> dict[str, Any]:
    request = TaskRequest(method=method, params=TaskParams(task_id=task_id, **params))
    result = await client.session.send_request(request, TaskState if method == "tasks/get" else Empty)
    return result.model_dump(by_alias=True, mode="json", exclude_none=False)


async def get(client: Client, task_id: str) -> dict[str, Any]:
    return await send(client, "tasks/get", task_id)


async def settle(client: Client, task_id: str, seconds: float = 60) -> dict[str, Any]:
    """Poll `tasks/get` (at the task's pollIntervalMs) until the task ends."""
    with anyio.fail_after(seconds):
        while (task := await get(client, task_id))["status"] in ("working", "input_required"):
            await anyio.sleep(min(task.get("pollIntervalMs") or 100, 1000) / 1000)
    return task
