"""Tool `cancel_job`: stop a quantum job of yours that is still queued or running."""

from __future__ import annotations

from mcp_server.adapters import ToolRegistry
from mcp_server.adapters.arguments import JOB_ID
from mcp_server.calls import Call
from mcp_server.quantum.jobs import Job
from mcp_server.views import QuantumJob


def register(tools: ToolRegistry) -> None:
    @tools.tool(title="Cancel a quantum job")
    async def cancel_job(call: Call, job_id: JOB_ID) -> QuantumJob:
        """Cancel a quantum job. A local run is stopped at once (its worker process is ended); an
        Azure job is cancelled at the service. A job that already ended is returned unchanged, with
        a message saying nothing was cancelled; a job running in another server process is flagged
        and stops at that process's next heartbeat.
        """
        jobs = call.services.jobs
        before = await jobs.get(call.caller, job_id)
        job = before if before.status.final else await jobs.cancel(call.caller, job_id)
        call.note_job(job)
        view = QuantumJob.from_job(job, budget=call.services.settings.max_result_bytes)
        note = already_ended(before)
        return view if note is None else view.model_copy(update={"message": note})


def already_ended(job: Job) -> str | None:
    """What cancel_job says about a job that had ended before it was asked to cancel it."""
    if not job.status.final:
        return None
    return f"job {job.id} had already ended ({job.status.value}); nothing was cancelled"
