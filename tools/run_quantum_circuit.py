"""Tool `run_quantum_circuit`: run an OpenQASM circuit, or a signed workflow's circuit, as a job."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mcp_server.adapters import ToolRegistry
from mcp_server.calls import Call
from mcp_server.quantum.backends import JobStatus
from mcp_server.quantum.circuits import looks_like_maml
from mcp_server.quantum.jobs import job_error
from mcp_server.quantum.runs import DEFAULT_SHOTS, plan_run
from mcp_server.views import QuantumJob


def register(tools: ToolRegistry) -> None:
    @tools.tool(
        title="Run a quantum circuit",
        document="circuit",
        document_if=looks_like_maml,
        limits={"shots": "shots"},
        task="job",
    )
    async def run_quantum_circuit(
        call: Call,
        circuit: Annotated[
            str,
            Field(
                description="OpenQASM 2 or 3 text, or a signed MAML workflow whose ## Code_Blocks holds "
                "the circuit (a qasm, openqasm3 or qiskit block; Python blocks are never executed)."
            ),
        ],
        shots: Annotated[
            int | None,
            Field(ge=1, description=f"Shots; default the workflow's requires.shots, else {DEFAULT_SHOTS}."),
        ] = None,
        backend: Annotated[
            str,
            Field(
                description="'local' (Aer simulator, default) or 'azure:<target>', e.g. azure:ionq.simulator."
            ),
        ] = "local",
        seed: Annotated[
            int | None, Field(ge=0, lt=2**63, description="Simulator seed, for repeatable runs.")
        ] = None,
        wait_seconds: Annotated[
            float | None,
            Field(
                ge=0,
                description="Seconds to wait for the result inline (default 4 s, under common client "
                "timeouts; at most 120 s); 0 returns at once with the job_id.",
            ),
        ] = None,
    ) -> QuantumJob:
        """Run a quantum circuit and return its measurement counts.

        Small local runs finish inline. To wait longer inline, pass wait_seconds (e.g. 60) if your
        client's request timeout allows it; otherwise read or subscribe to jobs://<job_id>.
        A run still going after wait_seconds comes back with its
        job_id and status: read the resource jobs://<job_id> (or subscribe to it) for the result,
        or cancel it with cancel_job. Over a limit (qubits, shots) the error says requested and
        allowed. A workflow runs only if it is signed by a trusted key and its permissions.execute
        admits you; its requires.qubits and requires.shots bound the run.
        """
        services = call.services
        settings = services.settings
        plan = await plan_run(
            call,
            services.jobs,
            source=circuit,
            shots=shots,
            backend=backend,
            max_bytes=settings.max_document_bytes,
        )
        job = await services.jobs.submit(
            call.caller, plan.circuit, plan.choice, shots=plan.shots, seed=seed, document_id=plan.document_id
        )
        call.note_job(job)
        wait = settings.quantum_wait_seconds if wait_seconds is None else wait_seconds
        wait = min(wait, settings.quantum_max_wait_seconds)
        if call.in_task:  # answered with a task that follows the job: no inline wait
            wait = 0
            call.task_view = {"measured_all_added": plan.circuit.measured_all_added}

        async def progress(elapsed: float, total: float, status: str) -> None:
            await call.progress(elapsed, total, f"job {job.id} {status}")

        if wait > 0:
            job = await services.jobs.wait(job.id, wait, progress)
            call.note_job(job)
        if job.status is JobStatus.failed and job.error:
            raise job_error(job)
        return QuantumJob.from_job(
            job, budget=settings.max_result_bytes, measured_all_added=plan.circuit.measured_all_added
        )
