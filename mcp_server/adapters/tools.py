"""The tool adapter: tools declare, the adapter owns the call.

A tool module declares its tool once, with `ToolRegistry.tool`:

    def register(tools: ToolRegistry) -> None:
        @tools.tool(title="Sign a MAML document", document="document")
        async def sign_maml(call: Call, document: DOCUMENT, key_id: KEY_ID = None) -> SignResult:
            ...

The tool's name is its operation in `mcp_server/policy/operations.py` (scope, document action,
whether it signs, spends or changes); a tool without one is refused at start-up
(`UndeclaredTool`), and its MCP annotations are derived from that entry. `document` names the
argument that holds the MAML document the policy checks (`document_if` when that argument holds a
document only sometimes), `limits` the arguments checked against the request limits.

Every call, in order (`ToolRunner.call`):
1. open a `Call` record with the arguments as sent;
2. identify the caller, and admit the call: offered, scope, rate (`Guard.admit`);
3. validate the arguments against the tool's input schema (`invalid_document` naming each field);
4. the document and limit checks (`Call.decide` -> `Guard.decide`);
5. run the body with the validated arguments and the `Call`;
6. shape the result (`results.ok_result` / `results.error_result`; an unexpected exception is
   logged and answered as `internal_error`, never with its text);
7. record exactly one receipt (`ledger.drafts.call_draft`) and wait until a signed checkpoint covers
   it; its evidence (id, leaf index, a tlog-proof) goes into the result's `_meta`. If it cannot be
   written and covered, the result is withheld and the caller gets `backend_unavailable`;
8. count the call (metrics) and write one log line (who, tool, outcome, duration).

A client that declared the tasks extension (`mcp_server.tasks`) calling a tool declared with
`task=` is answered with a task handle instead: `task="job"` runs steps 1-8 as above (the body
submits its job without waiting) and then stores a task that follows the job; `task="deferred"`
runs steps 1-4, stores the task and answers, then runs steps 5-8 after the answer, storing the
result (with its receipt) on the task. A refusal in steps 2-4 is answered as without tasks.

A failure in steps 2-4 is a refusal (`Call.refuse`: receipt `denied`, an audit line, a metric); a
body refuses through the same method. The registered SDK `Tool` is `OwnedTool`, whose `run` hands the
raw arguments to the runner, so argument validation is the adapter's too.
"""

from __future__ import annotations

import inspect
import json
import logging
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult
from pydantic import BaseModel, Field, ValidationError

from mcp_server import metrics
from mcp_server.adapters.results import error_result, invalid_arguments, ok_result, with_receipt
from mcp_server.calls import Call
from mcp_server.errors import BackendUnavailable, Cancelled, InternalError, MacroslowError
from mcp_server.ledger.drafts import call_draft
from mcp_server.logs import request_id
from mcp_server.policy.guard import Request
from mcp_server.policy.operations import OPERATIONS, Operation

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from mcp_server.admission import Admission
    from mcp_server.auth.principal import Principal
    from mcp_server.ledger.integrate import Evidence
    from mcp_server.services import ServiceHost

log = logging.getLogger("mcp_server.tools")
calls_log = logging.getLogger("mcp_server.calls")

Body = Callable[..., Awaitable[BaseModel]]
CALL_PARAMETER = "call"
TaskKind = Literal["job", "deferred"]
T = TypeVar("T")


class UndeclaredTool(Exception):
    """A tool registered without an operation, or declared wrongly: a programming error, found at
    start-up."""


@dataclass(frozen=True)
class ToolSpec:
    fn: Body
    operation: Operation
    title: str
    document: str | None = None
    document_if: Callable[[str], bool] | None = None
    limits: Mapping[str, str] = field(default_factory=dict)  # argument -> `Request` field
    task: TaskKind | None = None  # how a call becomes a task for a client that declares tasks

    @property
    def name(self) -> str:
        return self.operation.name

    def document_of(self, arguments: Mapping[str, Any]) -> str | None:
        if self.document is None:
            return None
        value = arguments.get(self.document)
        if value is None or (self.document_if is not None and not self.document_if(value)):
            return None
        return str(value)

    def request_of(self, arguments: Mapping[str, Any]) -> Request:
        return Request(**{field: arguments.get(arg) for arg, field in self.limits.items()})


class ToolRegistry:
    """The tools a server offers, each with its operation; `build` makes the SDK's `Tool`s."""

    def __init__(self) -> None:
        self.specs: dict[str, ToolSpec] = {}

    def tool(
        self,
        *,
        title: str,
        document: str | None = None,
        document_if: Callable[[str], bool] | None = None,
        limits: Mapping[str, str] | None = None,
        task: TaskKind | None = None,
    ) -> Callable[[Body], Body]:
        def declare(fn: Body) -> Body:
            name = fn.__name__
            operation = OPERATIONS.get(name)
            if operation is None or "://" in name:
                raise UndeclaredTool(
                    f"tool {name!r} has no operation in mcp_server/policy/operations.py (scope, document "
                    "action, whether it signs, spends or changes): add one there first"
                )
            parameters = inspect.signature(fn).parameters
            if CALL_PARAMETER not in parameters:
                raise UndeclaredTool(f"tool {name!r} must take the call record as `{CALL_PARAMETER}`")
            for argument in [document, *(limits or {})]:
                if argument is not None and argument not in parameters:
                    raise UndeclaredTool(f"tool {name!r} declares {argument!r}, which is not an argument")
            if name in self.specs:
                raise UndeclaredTool(f"tool {name!r} is registered twice")
            self.specs[name] = ToolSpec(fn, operation, title, document, document_if, dict(limits or {}), task)
            return fn

        return declare

    def build(self, runner: ToolRunner) -> list[Tool]:
        return [OwnedTool.owned(spec, runner) for spec in self.specs.values()]


class OwnedTool(Tool):
    """The SDK's `Tool` (name, schemas, annotations for `tools/list`) whose `run` is the adapter's."""

    spec: Any = Field(default=None, exclude=True)
    runner: Any = Field(default=None, exclude=True)

    @classmethod
    def owned(cls, spec: ToolSpec, runner: ToolRunner) -> OwnedTool:
        tool = cls.from_function(
            spec.fn,
            name=spec.name,
            title=spec.title,
            context_kwarg=CALL_PARAMETER,  # not an argument: the adapter passes the `Call`
            annotations=spec.operation.annotations(),
        )
        assert isinstance(tool, OwnedTool)
        tool.spec, tool.runner = spec, runner
        return tool

    async def run(
        self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False
    ) -> CallToolResult | dict[str, Any]:
        runner: ToolRunner = self.runner
        return await runner.call(self, arguments, context)


class ToolRunner:
    def __init__(self, admission: Admission, host: ServiceHost) -> None:
        self.admission = admission
        self.host = host

    async def call(
        self, tool: OwnedTool, arguments: dict[str, Any], context: Context[Any, Any]
    ) -> CallToolResult | dict[str, Any]:
        """The call's result; or, for a client that declared the tasks extension and a tool that
        declares `task=`, a task handle (`CreateTaskResult`, see `mcp_server.tasks`)."""
        spec: ToolSpec = tool.spec
        call = Call(spec.name, dict(arguments), ctx=context)
        call.in_task = spec.task is not None and wants_tasks(context)
        admitted = await self._attempt(spec, lambda: self._admit(tool, spec, call, arguments))
        if isinstance(admitted, MacroslowError):
            return (await self._answer(call, admitted))[0]
        if call.in_task and spec.task == "deferred":
            return await self._defer(spec, call, admitted)
        outcome = await self._attempt(spec, lambda: self._body(spec, call, admitted))
        result, answered = await self._answer(call, outcome)
        if answered and call.in_task and spec.task == "job" and call.backend_job_id is not None:
            try:
                created = await call.services.tasks.create_for_job(
                    call.caller, spec.name, call.backend_job_id, call.task_view
                )
            except MacroslowError as exc:  # the job runs and is at jobs://<id>: answer as without tasks
                log.error("tool %s: its task could not be created (%s); answered inline", spec.name, exc.code)
                return result
            if result.meta:
                created["_meta"] = result.meta  # the receipt of the call that made the task
            return created
        return result

    async def _attempt(self, spec: ToolSpec, step: Callable[[], Awaitable[T]]) -> T | MacroslowError:
        """`step()`, or the error to answer with (an unexpected exception is logged, never shown)."""
        try:
            return await step()
        except MacroslowError as exc:
            log.info("tool %s refused: %s", spec.name, exc.code)
            return exc
        except Exception:
            log.exception("tool %s failed unexpectedly", spec.name)
            return InternalError(
                f"{spec.name} failed unexpectedly inside the server; the failure is logged there"
            )

    async def _answer(self, call: Call, outcome: BaseModel | MacroslowError) -> tuple[CallToolResult, bool]:
        """Shape the result, record the receipt (the result is withheld when it cannot be covered),
        count and log the call. Returns the result and whether the body's own answer stands."""
        error = outcome if isinstance(outcome, MacroslowError) else None
        structured: dict[str, Any] | None = None
        if error is None:
            assert isinstance(outcome, BaseModel)
            result = ok_result(outcome)
            structured = result.structured_content
        else:
            result = error_result(error)
        try:
            evidence = await self._receipt(call, structured, error)
        except MacroslowError as exc:
            log.error("tool %s: receipt not covered (%s); result withheld", call.name, exc.code)
            error = BackendUnavailable(
                "the receipt for this call could not be written and covered by a signed checkpoint, so "
                "its result is withheld; try again shortly"
            )
            result = error_result(error)
            observe(call, error.code)
            return result, False
        if evidence is not None:
            result = with_receipt(result, evidence)
        observe(call, error.code if error is not None else "ok")
        return result, error is None

    async def _defer(
        self, spec: ToolSpec, call: Call, validated: dict[str, Any]
    ) -> CallToolResult | dict[str, Any]:
        """Answer with a task at once; the body runs after, its answer (with its receipt) ends the
        task. Cancelled (`tasks/cancel`, or the server stopping) it records a `cancelled` receipt."""
        call.ctx = None  # the request ends with the handle: nothing to report progress to

        async def work() -> CallToolResult:
            try:
                outcome = await self._attempt(spec, lambda: self._body(spec, call, validated))
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._answer(call, Cancelled(f"{spec.name} was cancelled before it ended"))
                raise
            return (await self._answer(call, outcome))[0]

        try:
            return await call.services.tasks.defer(call.caller, spec.name, work)
        except MacroslowError as exc:  # the task could not be stored: nothing runs
            return (await self._answer(call, exc))[0]

    async def refused_at_the_door(
        self, name: str, arguments: dict[str, Any] | None, principal: Principal, exc: MacroslowError
    ) -> None:
        """A request the HTTP layer refused before it reached the SDK (403 insufficient_scope): the
        same refusal (audit line, metric) as if an adapter had refused it, and for a tool call
        (`arguments` not None) the same receipt."""
        call = Call(name, arguments or {})
        call.principal = principal
        call.refuse(exc)
        if arguments is None:
            return
        try:
            call.attach(self.host.current())
        except BackendUnavailable:
            return
        try:
            await self._receipt(call, None, exc)
        except MacroslowError as error:
            log.error("tool %s: receipt of a refusal not covered (%s)", name, error.code)
        observe(call, exc.code)

    async def _receipt(
        self, call: Call, structured: dict[str, Any] | None, error: MacroslowError | None
    ) -> Evidence | None:
        """Record the call's receipt; returns once a signed checkpoint covers it, with the proof
        (None when the server is not open: there is no ledger to write to)."""
        if call._services is None:
            return None
        services = call.services
        draft = call_draft(
            call, result=structured, error=error, payloads=services.settings.receipt_payloads == "redacted"
        )
        return await anyio.to_thread.run_sync(services.ledger.record, draft)

    async def _admit(
        self, tool: OwnedTool, spec: ToolSpec, call: Call, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """Steps 2-4: identify and admit the caller, validate the arguments, the document and limit
        checks. Returns the validated arguments."""
        call.attach(await self.host.ready())  # not open: no receipt can be written, nothing to refuse
        try:
            call.principal = await self.admission.identify()
            call.operation = await call.services.guard.admit(call.principal, spec.name)
            try:
                validated = validate(tool, arguments)
            except ValidationError as exc:
                raise invalid_arguments(spec.name, exc) from None
        except MacroslowError as exc:
            raise call.refuse(exc) from None
        await call.decide(document=spec.document_of(validated), request=spec.request_of(validated))
        return validated

    async def _body(self, spec: ToolSpec, call: Call, validated: dict[str, Any]) -> BaseModel:
        model = await spec.fn(**validated, **{CALL_PARAMETER: call})
        if not isinstance(model, BaseModel):  # pragma: no cover - the declaration's return type
            raise TypeError(f"tool {spec.name} returned {type(model).__name__}, not its result model")
        return model


def wants_tasks(context: Context[Any, Any] | None) -> bool:
    """Whether this request's client declared the tasks extension, on a protocol version that can
    carry a task handle (2026-07-28 and later; older wires cannot)."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    from mcp_server.tasks import TASKS_EXTENSION

    if context is None:
        return False
    try:
        version = context.protocol_version
        capabilities = context.client_capabilities
    except (ValueError, RuntimeError):  # no request context (called outside a request)
        return False
    declared = capabilities.extensions if capabilities is not None else None
    return version in MODERN_PROTOCOL_VERSIONS and bool(declared) and TASKS_EXTENSION in declared  # type: ignore[operator]


def validate(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments validated against the tool's input schema (its argument model).

    Some hosts send a list or object argument as JSON text (Claude Desktop does); such a string is
    decoded first — but only for an argument that cannot be a string. (The SDK decodes any string
    that looks like JSON for any argument not typed exactly `str`, so a `str | None` argument
    holding JSON text, such as a detached signature or a prompt about JSON, was turned into an
    object and refused.)"""
    model = tool.fn_metadata.arg_model
    decoded = dict(arguments)
    for name, field_info in model.model_fields.items():
        key = field_info.alias or name
        value = arguments.get(key)
        if isinstance(value, str) and not _admits_str(field_info.annotation):
            try:
                parsed = json.loads(value)
            except (ValueError, RecursionError):
                continue  # not JSON (or JSON no one should decode): validation says what is wrong
            if isinstance(parsed, list | dict):
                decoded[key] = parsed
    return model.model_validate(decoded).model_dump_one_level()


def _admits_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _admits_str(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_str(arg) for arg in typing.get_args(annotation))
    return annotation is Any


def observe(call: Call, outcome: str) -> None:
    """Metrics and one structured log line per call: who, which tool, outcome, duration; never
    arguments, documents or tokens."""
    seconds = call.seconds
    tool = metrics.label(call.name)
    metrics.TOOL_CALLS.labels(tool, metrics.label(outcome)).inc()
    metrics.TOOL_LATENCY.labels(tool).observe(seconds)
    principal = call.principal
    calls_log.info(
        "tool %s: %s",
        call.name,
        outcome,
        extra={
            "request_id": request_id.get(),
            "sub": principal.sub if principal is not None else None,
            "tool": call.name,
            "outcome": outcome,
            "duration_ms": round(seconds * 1000, 3),
        },
    )
