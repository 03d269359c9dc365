"""Tool `cancel_job`: stop a quantum job of yours that is still queued or running."""

from __future__ import annotations

from mcp_server.adapters import ToolRegistry
from mcp_server.adapters.arguments import JOB_ID
from mcp_server.calls import Call
from mcp_server.views import QuantumJob


def register(tools: ToolRegistry) -> None:
    @tools.tool(title="Cancel a quantum job")
    async def cancel_job(call: Call, job_id: JOB_ID) -> QuantumJob:
        """Cancel a quantum job. A local run is stopped at once (its worker process is ended); an
        Azure job is cancelled at the service. A job that already ended is returned unchanged; a job
        running in another server process is flagged and stops at that process's next heartbeat.
        """
        job = await call.services.jobs.cancel(call.caller, job_id)
        call.note_job(job)
        return QuantumJob.from_job(job, budget=call.services.settings.max_result_bytes)
