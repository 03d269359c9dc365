"""`TasksExtension`: the SDK extension (`mcp.server.extension`) that advertises
`io.modelcontextprotocol/tasks` and serves `tasks/get`, `tasks/update` and `tasks/cancel`.

Each method first requires the client to have declared the extension on the request (-32021 with
`requiredCapabilities` otherwise, as the extension says), then identifies the caller as any other
request is identified (`Admission.identify`), then asks the task service. A task that does not exist,
has expired, or is another caller's is -32602 "task not found", the same answer for all three.

Which tool calls become tasks is the adapter's decision (`mcp_server.adapters.tools`): this module
serves only the task methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from mcp.server.context import ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, InputResponses, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from mcp_server.adapters.results import resource_error
from mcp_server.errors import MacroslowError, NotFound
from mcp_server.tasks import TASKS_EXTENSION

if TYPE_CHECKING:
    from mcp_server.admission import Admission
    from mcp_server.auth.principal import Principal
    from mcp_server.services import ServiceHost
    from mcp_server.tasks.service import TaskService


class TaskParams(RequestParams):
    task_id: str = Field(min_length=1, max_length=128)


class UpdateTaskParams(TaskParams):
    input_responses: InputResponses | dict[str, Any] = Field(default_factory=dict)


class TasksExtension(Extension):
    identifier = TASKS_EXTENSION

    def __init__(self, admission: Admission, host: ServiceHost) -> None:
        self.admission = admission
        self.host = host

    def methods(self) -> Sequence[MethodBinding]:
        versions = frozenset(MODERN_PROTOCOL_VERSIONS)
        return (
            MethodBinding("tasks/get", TaskParams, self._get, protocol_versions=versions),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, protocol_versions=versions),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, protocol_versions=versions),
        )

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        return await self._serve(ctx, params, lambda tasks, caller: tasks.get(caller, params.task_id))

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> dict[str, Any]:
        async def update(tasks: TaskService, caller: Principal) -> dict[str, Any]:
            await tasks.update(caller, params.task_id)
            return {}

        return await self._serve(ctx, params, update)

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        async def cancel(tasks: TaskService, caller: Principal) -> dict[str, Any]:
            await tasks.cancel(caller, params.task_id)
            return {}

        return await self._serve(ctx, params, cancel)

    async def _serve(
        self,
        ctx: ServerRequestContext[Any, Any],
        params: TaskParams,
        act: Callable[[TaskService, Principal], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        require_client_extension(ctx, TASKS_EXTENSION)
        try:
            caller = await self.admission.identify()
            services = await self.host.ready()
            return await act(services.tasks, caller)
        except NotFound as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: {exc.message}") from None
        except MacroslowError as exc:
            raise resource_error(exc) from None
