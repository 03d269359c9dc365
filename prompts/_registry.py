"""The prompt adapter: prompt modules declare, `PromptRegistry` registers and answers.

A prompt module declares its prompt once:

    def register(prompts: PromptRegistry) -> None:
        @prompts.prompt(
            title="Write a MAML workflow",
            arguments=[Argument("intent", "What the workflow should do.", required=True)],
            needs=("validate_maml",),
        )
        async def write_workflow(ask: Ask, intent: str) -> list[PromptMessage]:
            ...

`needs` names the operations (`mcp_server/policy/operations.py`) the prompt walks the user
through: `prompts/list` shows a caller only the prompts whose operations it is offered and holds
the scopes of, and `prompts/get` refuses the others (`forbidden`, naming the scope).

Every `prompts/get` is answered here, not by the SDK's prompt manager (which answers an unknown
name or a missing argument with a `ValueError`: -32603 and a traceback in the log on 2026-07-28,
code 0 on the handshake-era wire). In order:

1. an unknown name -> JSON-RPC -32602 (Invalid params), naming it;
2. the arguments: a name the prompt does not declare, a required one missing or blank, a value
   longer than `MAX_ARGUMENT_CHARS` -> -32602 naming the argument (never echoing its value);
   a blank optional argument counts as absent (hosts send every declared argument);
3. the caller is identified and the prompt's operations checked (`Policy.check`): `forbidden`
   (-32003) naming the missing scope;
4. the body runs. `BadArgument` from it (an argument only the body can judge: a workflow the
   caller may not read) -> -32602; a `MacroslowError` -> the JSON-RPC error a resource read answers
   with (`adapters.results.resource_error`: the stable code in `data`); anything else is logged
   and answered -32603 without its text.

The SDK's `Prompt` objects are registered too, so `prompts/list` and `MCPServer.get_prompt` see the
same prompts, titles and arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.mcpserver.prompts.base import PromptArgument
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    GetPromptRequestParams,
    GetPromptResult,
    ListPromptsResult,
    PaginatedRequestParams,
    PromptMessage,
)

from mcp_server.adapters import resource_error
from mcp_server.errors import MacroslowError
from mcp_server.policy.operations import OPERATIONS

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from mcp_server.admission import Admission
    from mcp_server.auth.principal import Principal
    from mcp_server.services import ServiceHost, Services
    from mcp_server.settings import Settings

log = logging.getLogger("mcp_server.prompts")

MAX_ARGUMENT_CHARS = 4000  # an intent is a paragraph; ids and times are short
# What an argument's values can be completed from: a source of `mcp_server.completions`.
Source = Literal["workflows", "jobs", "receipts"]
Body = Callable[..., Awaitable[list[PromptMessage]]]


class BadArgument(Exception):
    """An argument the prompt's body found unusable: answered as -32602 with this message."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"argument '{argument}': {message}")
        self.argument = argument


@dataclass(frozen=True)
class Argument:
    """A prompt argument: every value arrives as a string (the MCP prompt argument model)."""

    name: str
    description: str
    required: bool = False
    completion: Source | None = None  # completable from this source (`completion/complete`)


@dataclass(eq=False)
class Ask:
    """What a prompt body gets: the caller and, when it needs them, the open services."""

    admission: Admission
    host: ServiceHost
    principal: Principal

    @property
    def settings(self) -> Settings:
        return self.admission.settings

    async def services(self) -> Services:
        """The open services (opened first if need be); `backend_unavailable` when they cannot be."""
        return await self.host.ready()


@dataclass(frozen=True)
class DeclaredPrompt:
    name: str
    title: str
    description: str
    arguments: tuple[Argument, ...]
    needs: tuple[str, ...]
    body: Body

    def argument(self, name: str) -> Argument | None:
        return next((a for a in self.arguments if a.name == name), None)

    def checked(self, arguments: Mapping[str, str] | None) -> dict[str, str]:
        """The arguments the body is called with, or -32602 naming what is wrong (step 2)."""
        given = dict(arguments or {})
        declared = {a.name for a in self.arguments}
        unknown = sorted(set(given) - declared)
        if unknown:
            names = ", ".join(f"'{n[:64]}'" for n in unknown[:5])
            known = ", ".join(f"'{n}'" for n in sorted(declared)) or "none"
            raise invalid_params(f"prompt '{self.name}' has no argument {names}; its arguments: {known}")
        values: dict[str, str] = {}
        for arg in self.arguments:
            value = given.get(arg.name)
            if value is None or not value.strip():
                if arg.required:
                    raise invalid_params(
                        f"prompt '{self.name}' needs the argument '{arg.name}': {arg.description}"
                    )
                continue
            if len(value) > MAX_ARGUMENT_CHARS:
                raise invalid_params(
                    f"argument '{arg.name}' of prompt '{self.name}' is longer than "
                    f"{MAX_ARGUMENT_CHARS} characters ({len(value)})"
                )
            values[arg.name] = value.strip()
        return values


def invalid_params(message: str) -> MCPError:
    return MCPError(code=INVALID_PARAMS, message=message)


@dataclass(eq=False)
class PromptRegistry:
    """Declares prompts on `server` and answers `prompts/list` and `prompts/get` for them."""

    server: MCPServer[Any]
    admission: Admission
    host: ServiceHost
    declared: dict[str, DeclaredPrompt] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lowlevel = self.server._lowlevel_server  # no public seam replaces a request handler
        lowlevel.add_request_handler("prompts/list", PaginatedRequestParams, self._list)
        lowlevel.add_request_handler("prompts/get", GetPromptRequestParams, self._get)

    # -- declaring ------------------------------------------------------------------------------
    def prompt(
        self, *, title: str, arguments: list[Argument], needs: tuple[str, ...], name: str | None = None
    ) -> Callable[[Body], Body]:
        """Declare the decorated body as a prompt (named after it unless `name` is given); its
        docstring is the prompt's description."""

        def declare(fn: Body) -> Body:
            prompt_name = name or fn.__name__
            for op in needs:
                if op not in OPERATIONS:
                    raise ValueError(f"prompt {prompt_name}: no operation {op!r} in policy/operations.py")
            if prompt_name in self.declared:
                raise ValueError(f"prompt {prompt_name} is declared twice")
            description = " ".join((fn.__doc__ or "").split())
            spec = DeclaredPrompt(prompt_name, title, description, tuple(arguments), needs, fn)
            self.declared[prompt_name] = spec

            async def direct(**given: str) -> list[dict[str, Any]]:
                result = await self.render(spec, given)
                return [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in result.messages]

            self.server.add_prompt(
                Prompt(
                    name=prompt_name,
                    title=title,
                    description=description,
                    arguments=[
                        PromptArgument(name=a.name, description=a.description, required=a.required)
                        for a in arguments
                    ],
                    fn=direct,
                    context_kwarg=None,
                )
            )
            return fn

        return declare

    # -- answering ------------------------------------------------------------------------------
    async def _caller(self) -> Principal | None:
        try:
            return await self.admission.identify()
        except MacroslowError:
            return None

    def visible(self, principal: Principal | None, spec: DeclaredPrompt) -> bool:
        policy = self.admission.policy
        return principal is not None and all(policy.visible(principal, op) for op in spec.needs)

    async def _list(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams
    ) -> ListPromptsResult:
        """The SDK's listing, filtered to the prompts this caller may use (like `tools/list`)."""
        principal = await self._caller()
        listed = await self.server.list_prompts()
        keep = [p for p in listed if (s := self.declared.get(p.name)) and self.visible(principal, s)]
        return ListPromptsResult(prompts=keep, cache_scope="private")  # per caller: never shared

    async def _get(self, ctx: ServerRequestContext[Any], params: GetPromptRequestParams) -> GetPromptResult:
        spec = self.declared.get(params.name)
        if spec is None:
            known = ", ".join(sorted(self.declared))
            raise invalid_params(f"no prompt '{params.name[:64]}'; the prompts are: {known}")
        return await self.render(spec, params.arguments)

    async def render(self, spec: DeclaredPrompt, arguments: Mapping[str, str] | None) -> GetPromptResult:
        """Steps 2-4 of the module docstring."""
        values = spec.checked(arguments)
        try:
            principal = await self.admission.identify()
            for op in spec.needs:
                self.admission.policy.check(principal, op)
            messages = await spec.body(Ask(self.admission, self.host, principal), **values)
        except BadArgument as exc:
            raise invalid_params(f"prompt '{spec.name}', {exc}") from None
        except MacroslowError as exc:
            log.info("prompt %s refused: %s", spec.name, exc.code)
            raise resource_error(exc) from None
        except MCPError:
            raise
        except Exception:
            log.exception("prompt %s failed", spec.name)
            raise MCPError(
                code=INTERNAL_ERROR, message=f"internal_error: prompt '{spec.name}' failed"
            ) from None
        return GetPromptResult(description=spec.description, messages=messages)
