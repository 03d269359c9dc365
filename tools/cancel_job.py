"""Tool `cancel_job`: stop a quantum job of yours that is still queued or running."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from mcp_server.adapters import tool_adapter
from mcp_server.state import AppState
from tools.run_quantum_circuit import QuantumJob, note_job


def register(server: MCPServer[Any], state: AppState) -> None:
    @tool_adapter(state)
    async def cancel_job(
        job_id: Annotated[str, Field(max_length=64, description="The job_id run_quantum_circuit returned.")],
    ) -> QuantumJob:
        """Cancel a quantum job. A local run is stopped at once (its worker process is ended); an
        Azure job is cancelled at the service. A job that already ended is returned unchanged; a job
        running in another server process is flagged and stops at that process's next heartbeat.
        """
        decision = await state.guard("cancel_job")
        job = await state.jobs.cancel(decision.principal, job_id)
        note_job(job)
        return QuantumJob.from_job(job)

    server.add_tool(
        cancel_job,
        title="Cancel a quantum job",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
        ),
    )
