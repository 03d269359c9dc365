"""Show each caller only what its scopes allow: `tools/list` and `resources/*list` are filtered by
the same policy that guards the calls (`Policy.visible`). A caller that cannot be identified sees
nothing; calling a hidden tool is still refused by the guard, whatever the caller saw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from pydantic import BaseModel

from mcp_server.admission import Admission
from mcp_server.auth.principal import Principal
from mcp_server.errors import MacroslowError
from mcp_server.policy.operations import operation_for_uri


def _uri_operation(uri: str) -> str:
    op = operation_for_uri(uri)
    return op.name if op is not None else ""


def _field(item: Any, name: str) -> str:
    return str(item.get(name) if isinstance(item, dict) else getattr(item, name, ""))


def _tool(item: Any) -> str:
    return _field(item, "name")


def _resource(item: Any) -> str:
    return _uri_operation(_field(item, "uri"))


def _template(item: Any) -> str:
    return _uri_operation(_field(item, "uriTemplate" if isinstance(item, dict) else "uri_template"))


# method -> (result key on the wire, attribute on the model, what names the operation)
_LISTS: dict[str, tuple[str, str, Callable[[Any], str]]] = {
    "tools/list": ("tools", "tools", _tool),
    "resources/list": ("resources", "resources", _resource),
    "resources/templates/list": ("resourceTemplates", "resource_templates", _template),
}


class ScopeVisibility:
    """`ServerMiddleware` filtering list results by the caller's scopes."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        listing = _LISTS.get(ctx.method)
        if listing is None or result is None:
            return result
        key, attribute, operation_of = listing
        try:
            principal: Principal | None = await self.admission.identify()
        except MacroslowError:
            principal = None
        policy = self.admission.policy

        def keep(items: list[Any]) -> list[Any]:
            if principal is None:
                return []
            return [item for item in items if policy.visible(principal, operation_of(item))]

        # The filtered list is per caller: never let a client share it across callers.
        if isinstance(result, BaseModel):
            update: dict[str, Any] = {attribute: keep(getattr(result, attribute))}
            if "cache_scope" in type(result).model_fields:
                update["cache_scope"] = "private"
            return result.model_copy(update=update)
        filtered = {**result, key: keep(result.get(key) or [])}
        if "cacheScope" in result:
            filtered["cacheScope"] = "private"
        return filtered
