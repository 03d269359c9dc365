"""The resource adapter: the tool adapter's counterpart for `resources/read` (and subscriptions).

A resource module declares each resource with the family (operation) it belongs to:

    def register(resources: ResourceRegistry) -> None:
        @resources.resource("jobs://{id}", operation="jobs://", name="job", ...)
        async def read_job(call: Call, id: str) -> str:
            ...

For every read: open a `Call`, identify the caller and admit it for the family (offered, scope,
rate: `Guard.admit`), run the body, and map every `MacroslowError` to the JSON-RPC error a client
receives (`results.resource_error`: the stable code, message and details in `data`). Refusals, here
or in the body (`call.decide`, `call.refuse`), write the audit line and count the metric. Reads
leave no receipt: receipts record tool calls, which are what change or spend.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, get_type_hints

from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import SubscriptionBus

from mcp_server.adapters.results import resource_error
from mcp_server.calls import Call
from mcp_server.errors import MacroslowError
from mcp_server.policy.operations import OPERATIONS

if TYPE_CHECKING:
    from mcp_server.admission import Admission
    from mcp_server.services import ServiceHost

log = logging.getLogger("mcp_server.resources")
Reader = Callable[..., Awaitable[str]]


class ResourceRegistry:
    def __init__(
        self, server: MCPServer[Any], admission: Admission, host: ServiceHost, bus: SubscriptionBus | None
    ) -> None:
        self.server = server
        self.admission = admission
        self.host = host
        self.bus = bus  # the server's subscription bus (`subscriptions/listen`)

    async def admit(self, operation: str, arguments: dict[str, Any]) -> Call:
        """A `Call` for a request about a resource family, identified and admitted, or the JSON-RPC
        error to answer with."""
        if operation not in OPERATIONS:
            raise ValueError(f"no operation {operation!r} in mcp_server/policy/operations.py")
        call = Call(operation, arguments)
        try:
            call.attach(await self.host.ready())
        except MacroslowError as exc:
            raise resource_error(exc) from None
        try:
            call.principal = await self.admission.identify()
            call.operation = await call.services.guard.admit(call.principal, operation)
        except MacroslowError as exc:
            log.info("%s refused: %s", operation, exc.code)
            raise resource_error(call.refuse(exc)) from None
        return call

    def resource(
        self, uri: str, *, operation: str, name: str, title: str, description: str, mime_type: str
    ) -> Callable[[Reader], Reader]:
        def declare(fn: Reader) -> Reader:
            signature = inspect.signature(fn)
            hints = get_type_hints(fn)
            params = [
                p.replace(annotation=hints.get(p.name, p.annotation))
                for p in signature.parameters.values()
                if p.name != "call"
            ]

            @functools.wraps(fn)
            async def read(**arguments: Any) -> str:
                call = await self.admit(operation, arguments)
                try:
                    return await fn(call, **arguments)
                except MacroslowError as exc:
                    log.info("%s read refused: %s", uri, exc.code)
                    raise resource_error(exc) from None

            read.__signature__ = signature.replace(parameters=params, return_annotation=str)  # type: ignore[attr-defined]
            read.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
            del read.__wrapped__  # the SDK must see `read`'s parameters, not `fn`'s
            self.server.resource(uri, name=name, title=title, description=description, mime_type=mime_type)(
                read
            )
            return fn

        return declare
