"""Show each caller only what its scopes allow: `tools/list` and `resources/*list` are filtered by
the same policy that guards the calls (`Policy.visible`). A caller that cannot be identified sees
nothing; calling a hidden tool is still refused by the guard, whatever the caller saw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from pydantic import BaseModel

from mcp_server.auth.principal import Principal
from mcp_server.errors import MacroslowError
from mcp_server.policy.operations import operation_for_uri
from mcp_server.state import AppState


def _uri_operation(uri: str) -> str:
    op = operation_for_uri(uri)
    return op.name if op is not None else ""


def _tool(item: Any) -> str:
    return str(item.name)


def _resource(item: Any) -> str:
    return _uri_operation(str(item.uri))


def _template(item: Any) -> str:
    return _uri_operation(str(item.uri_template))


_LISTS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "tools/list": ("tools", _tool),
    "resources/list": ("resources", _resource),
    "resources/templates/list": ("resource_templates", _template),
}


class ScopeVisibility:
    """`ServerMiddleware` filtering list results by the caller's scopes."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        listing = _LISTS.get(ctx.method)
        if listing is None or not isinstance(result, BaseModel):
            return result
        attribute, operation_of = listing
        try:
            principal: Principal | None = await self.state.principal()
        except MacroslowError:
            principal = None
        policy = self.state.policy
        kept = [
            item
            for item in getattr(result, attribute)
            if principal is not None and policy.visible(principal, operation_of(item))
        ]
        return result.model_copy(update={attribute: kept})
