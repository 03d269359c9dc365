"""Resources `jobs://{id}` (one quantum job: status, and the counts once it succeeded) and `jobs://`
(the caller's recent jobs).

Clients hear when a job's status changes: on the 2026-07-28 protocol through `subscriptions/listen`
(the server's subscription bus carries `ResourceUpdated(jobs://<id>)`), on earlier versions through
`resources/subscribe` and `notifications/resources/updated`. A notification only says "changed";
reading the job checks, as always, that it is the caller's.

`resources/subscribe` needs a channel that outlives the request: stdio and SSE have one. Stateless
Streamable HTTP answers each POST on its own and keeps nothing, so a subscription there could never
be told anything; it is refused (`LEGACY_SUBSCRIBE_REFUSED`) rather than accepted in vain. The SDK
tells a handler this through `session.can_send_request`: False exactly when the request's channel
cannot carry a server-initiated message later (stateless or JSON-response HTTP, and any 2026-07-28
connection, where change notifications travel only on `subscriptions/listen` streams).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import METHOD_NOT_FOUND, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from mcp_server.adapters import ResourceRegistry, resource_error
from mcp_server.calls import Call
from mcp_server.errors import InvalidDocument, NotFound
from mcp_server.ledger.receipts import json_digest
from mcp_server.quantum.jobs import Job
from mcp_server.views import COUNTS_PAGE, CountsPage, JobSummary, QuantumJob

OPERATION = "jobs://"
LISTED = 50
LEGACY_SUBSCRIBE_REFUSED = (
    "resources/subscribe cannot deliver updates on this connection (stateless Streamable HTTP keeps "
    "no channel to send them on): use subscriptions/listen (protocol 2026-07-28), or connect over "
    "stdio or SSE"
)
log = logging.getLogger(__name__)


class JobSubscriptions:
    """Who asked (handshake-era `resources/subscribe`) to hear about which job, and the bus for
    `subscriptions/listen`; `announce(job)` tells both."""

    def __init__(self, resources: ResourceRegistry, bus: SubscriptionBus | None) -> None:
        self.resources = resources
        self.bus = bus
        # Cleared when the job ends, or when sending to a session fails (it closed).
        self.sessions: dict[str, set[ServerSession]] = {}

    async def subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        if not ctx.session.can_send_request:  # nothing could reach this subscriber: say so
            raise MCPError(METHOD_NOT_FOUND, LEGACY_SUBSCRIBE_REFUSED)
        uri = str(params.uri)
        if not uri.startswith("jobs://") or uri == "jobs://":
            raise resource_error(InvalidDocument("only jobs://<id> can be subscribed to", field="uri"))
        await self.resources.admit(OPERATION, {"uri": uri})
        self.sessions.setdefault(uri, set()).add(ctx.session)
        return EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        self.sessions.get(str(params.uri), set()).discard(ctx.session)
        return EmptyResult()

    async def announce(self, job: Job) -> None:
        uri = f"jobs://{job.id}"
        if self.bus is not None:
            await self.bus.publish(ResourceUpdated(uri=uri))
        for session in list(self.sessions.get(uri, ())):
            try:
                with anyio.fail_after(2):
                    await session.send_resource_updated(uri)
            except Exception:  # a closed or stuck session: stop telling it
                log.debug("dropping a subscriber of %s", uri, exc_info=True)
                self.sessions[uri].discard(session)
        if job.status.final:
            self.sessions.pop(uri, None)


async def counts_page(call: Call, id: str, page: str) -> str:
    """Page `page` of the job's counts; not_found for a page past the last."""
    job = await call.services.jobs.get(call.caller, id)
    counts: dict[str, int] | None = (job.result or {}).get("counts")
    if counts is None:
        raise NotFound(f"job {id} has no counts (it is {job.status.value})")
    if not page.isdigit() or not 1 <= int(page) <= 10**9:
        raise InvalidDocument("the page is a number from 1", field="page")
    number = int(page)
    keys = sorted(counts)
    pages = max(1, -(-len(keys) // COUNTS_PAGE))
    if number > pages:
        raise NotFound(f"job {id}'s counts have {pages} pages")
    chosen = keys[(number - 1) * COUNTS_PAGE : number * COUNTS_PAGE]
    return CountsPage(
        job_id=job.id,
        counts_digest=json_digest(counts),
        distinct_outcomes=len(counts),
        shots=job.shots,
        page=number,
        pages=pages,
        counts={k: counts[k] for k in chosen},
        next=f"jobs://{job.id}/counts/{number + 1}" if number < pages else None,
    ).model_dump_json()


def register(resources: ResourceRegistry) -> None:
    subscriptions = JobSubscriptions(resources, resources.bus)
    resources.host.job_listeners.append(subscriptions.announce)
    # MCPServer has no public hook for these handshake-era methods; the low-level server takes them.
    lowlevel = resources.server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscriptions.subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, subscriptions.unsubscribe)

    @resources.resource(
        "jobs://{id}",
        operation=OPERATION,
        name="job",
        title="A quantum job",
        description="One of your quantum jobs as JSON: status, circuit summary, counts once it succeeded.",
        mime_type="application/json",
    )
    async def read_job(call: Call, id: str) -> str:
        job = await call.services.jobs.get(call.caller, id)
        return QuantumJob.from_job(job, budget=call.services.settings.max_result_bytes).model_dump_json(
            indent=2
        )

    @resources.resource(
        "jobs://{id}/counts",
        operation=OPERATION,
        name="job-counts",
        title="A quantum job's counts",
        description=f"Every count of one of your jobs, page 1 of {COUNTS_PAGE} bitstrings (in order); "
        "`next` names the following page.",
        mime_type="application/json",
    )
    async def read_counts(call: Call, id: str) -> str:
        return await counts_page(call, id, "1")

    @resources.resource(
        "jobs://{id}/counts/{page}",
        operation=OPERATION,
        name="job-counts-page",
        title="A page of a quantum job's counts",
        description=f"Page <page> (from 1) of a job's counts, {COUNTS_PAGE} bitstrings a page.",
        mime_type="application/json",
    )
    async def read_counts_page(call: Call, id: str, page: str) -> str:
        return await counts_page(call, id, page)

    @resources.resource(
        "jobs://",
        operation=OPERATION,
        name="jobs",
        title="Your quantum jobs",
        description=f"Your {LISTED} most recent quantum jobs, newest first, as JSON summaries.",
        mime_type="application/json",
    )
    async def list_jobs(call: Call) -> str:
        jobs = await call.services.jobs.list(call.caller, LISTED)
        return json.dumps({"jobs": [JobSummary.from_job(j).model_dump() for j in jobs]}, indent=2)
