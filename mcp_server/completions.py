"""Argument completion (`completion/complete`) for the resource templates and the prompts.

What completes from what (a template's family is `operations.operation_for_uri`, so
`jobs://{id}/counts` completes as `jobs://{id}` does):

    ref/resource maml://workflows/...{id}  id         the workflows the caller may read
    ref/resource jobs://{id}...            id         the caller's own quantum jobs, newest first
    ref/resource receipts://{id}...        id         the caller's own receipts, newest first
    ref/prompt   <prompt>                <argument>   the argument's declared source (`prompts`):
                                                      run_workflow's workflow_id -> workflows

The caller is identified as for every call (`Admission.identify`) and admitted for the family the
values come from (`Guard.admit`: offered, scope, rate), so a caller completes only what it could
read, and typing is rate limited like reading. Workflows follow the resource's visibility rule: a
document that parses and whose permissions.read admit the caller. Jobs and receipts are the
caller's own (same `agent://<sub>` and issuer) even for a caller with receipts:audit, who can still
read others' by typing their ids: completion never suggests another caller's ids.

Values are those that start with the typed text (case-insensitively), at most `MAX_VALUES` of them.
`total` is the number that match and `hasMore` says whether any were left out. Jobs and receipts
are looked for among the caller's newest `SCAN`; when it has more than that, the count of matches
is unknown: `total` is then absent, and `hasMore` true if more than `MAX_VALUES` matched, else
absent (unknown) rather than a guess.

Errors, as the spec's completion page lists them: an unknown prompt name -> -32602 (Invalid
params). A resource URI that is not one of these templates, or an argument without a source,
completes to nothing (no error). A caller without the family's scope gets nothing; rate limits and
an unavailable backend answer with the JSON-RPC error a resource read would
(`adapters.results.resource_error`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    PromptReference,
)

from mcp_server.adapters import resource_error
from mcp_server.errors import Forbidden, MacroslowError
from mcp_server.policy import access
from mcp_server.policy.operations import DocumentAction, operation_for_uri

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext
    from mcp.server.mcpserver import MCPServer

    from mcp_server.admission import Admission
    from mcp_server.auth.principal import Principal
    from mcp_server.services import ServiceHost, Services
    from prompts import PromptRegistry

log = logging.getLogger(__name__)

MAX_VALUES = 100  # the spec's cap per response
SCAN = 1000  # the caller's newest jobs or receipts looked through
Source = Literal["workflows", "jobs", "receipts"]

# where values come from, by the resource family (operation) a caller must be admitted for
FAMILIES: dict[str, Source] = {"maml://workflows": "workflows", "jobs://": "jobs", "receipts://": "receipts"}
FAMILY_OF: dict[Source, str] = {source: family for family, source in FAMILIES.items()}
ARGUMENT = "id"  # the template variable that completes, in every family's templates
NOTHING = Completion(values=[], total=0, has_more=False)


@dataclass(frozen=True)
class Candidates:
    values: list[str]  # ranked: the order they are offered in
    whole: bool  # every candidate there is, not only the newest SCAN


def matching(candidates: Candidates, typed: str) -> Completion:
    """The candidates starting with `typed` (case-insensitively), with a truthful total/hasMore."""
    prefix = typed.casefold()
    matches = [v for v in dict.fromkeys(candidates.values) if v.casefold().startswith(prefix)]
    shown = matches[:MAX_VALUES]
    left_out = len(matches) > len(shown)
    if candidates.whole:
        return Completion(values=shown, total=len(matches), has_more=left_out)
    return Completion(values=shown, total=None, has_more=True if left_out else None)


def workflow_ids(services: Services, principal: Principal) -> Candidates:
    """Each workflow the caller may read, by document id and by file name stem (both are what
    maml://workflows/{id} and run_workflow accept); blocking."""
    from mcp_server.maml import parser
    from mcp_server.workflows import SUFFIX

    values: list[str] = []
    for wf in services.workflows.files():
        try:
            document = parser.parse(wf.text, services.limits)
        except MacroslowError:
            continue  # no permissions anyone is admitted by, as in the listing
        if not services.guard.policy.may(principal, DocumentAction.read, document):
            continue
        if document.id:
            values.append(document.id)
        values.append(wf.name.removesuffix(SUFFIX))
    return Candidates(values, whole=True)


def job_ids(services: Services, principal: Principal) -> Candidates:
    """The caller's own jobs, newest first; blocking."""
    jobs = services.jobs.store.recent(principal.uri, limit=SCAN + 1)
    own = [j.id for j in jobs[:SCAN] if access.owns(principal, j)]
    return Candidates(own, whole=len(jobs) <= SCAN)


def receipt_ids(services: Services, principal: Principal) -> Candidates:
    """The caller's own receipts, newest first; blocking."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = services.ledger.page(
            principal=principal.uri, issuer=principal.issuer, limit=min(500, SCAN - len(ids)), cursor=cursor
        )
        ids.extend(receipt.id for receipt, _ in page.receipts)
        cursor = page.next_cursor
        if cursor is None or len(ids) >= SCAN:
            return Candidates(ids, whole=cursor is None)


SOURCES = {"workflows": workflow_ids, "jobs": job_ids, "receipts": receipt_ids}


class Completer:
    """The `completion/complete` handler (module docstring)."""

    def __init__(self, admission: Admission, host: ServiceHost, prompts: PromptRegistry) -> None:
        self.admission = admission
        self.host = host
        self.prompts = prompts

    def install(self, server: MCPServer[Any]) -> None:
        """Answer `completion/complete` on `server` (which then advertises `completions`)."""
        # Registered on the low-level server, as MCPServer.completion() does, with our own errors.
        server._lowlevel_server.add_request_handler("completion/complete", CompleteRequestParams, self.handle)

    def source(self, params: CompleteRequestParams) -> Source | None:
        ref, name = params.ref, params.argument.name
        if isinstance(ref, PromptReference):
            prompt = self.prompts.declared.get(ref.name)
            if prompt is None:
                known = ", ".join(sorted(self.prompts.declared))
                raise MCPError(
                    code=INVALID_PARAMS, message=f"no prompt '{ref.name[:64]}'; the prompts are: {known}"
                )
            argument = prompt.argument(name)
            return argument.completion if argument is not None else None
        family = operation_for_uri(ref.uri)
        return FAMILIES.get(family.name) if family is not None and name == ARGUMENT else None

    async def handle(self, ctx: ServerRequestContext[Any], params: CompleteRequestParams) -> CompleteResult:
        try:
            return CompleteResult(completion=await self.complete(params))
        except MCPError:
            raise
        except Exception:
            log.exception("completing %r failed", params.argument.name)
            raise MCPError(code=INTERNAL_ERROR, message="internal_error: completion failed") from None

    async def complete(self, params: CompleteRequestParams) -> Completion:
        source = self.source(params)
        if source is None:
            return NOTHING
        try:
            principal = await self.admission.identify()
            services = await self.host.ready()
            try:
                await services.guard.admit(principal, FAMILY_OF[source])
            except Forbidden:
                return NOTHING  # what it may not read, it is not told about
            # Parsing workflows is CPU work (the CPU pool); jobs and receipts are database reads.
            run = services.cpu if source == "workflows" else anyio.to_thread.run_sync
            candidates = await run(SOURCES[source], services, principal)
        except MacroslowError as exc:
            log.info("completion of %s refused: %s", source, exc.code)
            raise resource_error(exc) from None
        return matching(candidates, params.argument.value)
