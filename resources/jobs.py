"""Resources `jobs://{id}` (one quantum job: status, and the counts once it succeeded) and `jobs://`
(the caller's recent jobs).

Clients hear when a job's status changes: on the 2026-07-28 protocol through `subscriptions/listen`
(the server's subscription bus carries `ResourceUpdated(jobs://<id>)`), on earlier versions through
`resources/subscribe` and `notifications/resources/updated`. A notification only says "changed";
reading the job checks, as always, that it is the caller's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp_types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from mcp_server.adapters import resource_error
from mcp_server.errors import MacroslowError
from mcp_server.quantum.store import Job
from mcp_server.state import AppState
from tools.run_quantum_circuit import QuantumJob

LISTED = 50
log = logging.getLogger(__name__)


class JobSubscriptions:
    """Who asked (handshake-era `resources/subscribe`) to hear about which job, and the bus for
    `subscriptions/listen`; `announce(job)` tells both."""

    def __init__(self, state: AppState, bus: SubscriptionBus | None) -> None:
        self.state = state
        self.bus = bus
        # Cleared when the job ends, or when sending to a session fails (it closed).
        self.sessions: dict[str, set[ServerSession]] = {}

    async def subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        try:
            if not uri.startswith("jobs://") or uri == "jobs://":
                from mcp_server.errors import InvalidDocument

                raise InvalidDocument("only jobs://<id> can be subscribed to", field="uri")
            await self.state.guard("jobs://")
        except MacroslowError as exc:
            raise resource_error(exc) from None
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


def register(server: MCPServer[Any], state: AppState) -> None:
    subscriptions = JobSubscriptions(state, getattr(server, "subscription_bus", None))
    state.job_listeners.append(subscriptions.announce)
    # MCPServer has no public hook for these handshake-era methods; the low-level server takes them.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscriptions.subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, subscriptions.unsubscribe)

    @server.resource(
        "jobs://{id}",
        name="job",
        title="A quantum job",
        description="One of your quantum jobs as JSON: status, circuit summary, counts once it succeeded.",
        mime_type="application/json",
    )
    async def read_job(id: str) -> str:
        try:
            decision = await state.guard("jobs://")
            job = await state.jobs.get(decision.principal, id)
        except MacroslowError as exc:
            raise resource_error(exc) from None
        return QuantumJob.from_job(job).model_dump_json(indent=2)

    @server.resource(
        "jobs://",
        name="jobs",
        title="Your quantum jobs",
        description=f"Your {LISTED} most recent quantum jobs, newest first, as JSON summaries.",
        mime_type="application/json",
    )
    async def list_jobs() -> str:
        try:
            decision = await state.guard("jobs://")
            jobs = await state.jobs.list(decision.principal, LISTED)
        except MacroslowError as exc:
            raise resource_error(exc) from None
        summaries = [
            {
                "job_id": j.id,
                "status": j.status.value,
                "backend": j.backend,
                "target": j.target,
                "qubits": j.qubits,
                "shots": j.shots,
                "created_at": QuantumJob.from_job(j).created_at,
                "resource": f"jobs://{j.id}",
            }
            for j in jobs
        ]
        return json.dumps({"jobs": summaries}, indent=2)
