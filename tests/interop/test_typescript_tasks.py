"""The tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28) through a requester others wrote:
the official TypeScript package `@modelcontextprotocol/ext-tasks` 0.2.2 on its peer
`@modelcontextprotocol/client` 2.4.0 (both pinned in ts/package.json and installed by the
`npm_installed` fixture), over Streamable HTTP (`serve --no-auth`), driven by ts/tasks.mjs.

The package itself drives every task: `createTaskSessionFromClient` on a connected 2.x `Client`
pinned to 2026-07-28; `session.callTool` declares the extension on the request and recognises the
task handle; the execution's `settle()` polls `tasks/get` until the task ends and decodes the
result; `cancel()` sends `tasks/cancel`. It reads the server's `CreateTaskResult`, `tasks/get`
and `tasks/cancel` answers through its own 2026-07-28 schemas (core/v2): an answer that did not
match would not be taken for a task, or would fail the settlement.

What the package cannot do alone against a 2026-07-28 server, by its design: send the requests.
The SDK `Client`'s request path rejects a `tools/call` answered with `resultType: "task"` (it
throws `SdkError` UNSUPPORTED_RESULT_TYPE, "Unsupported result type 'task' for tools/call": tried
against this server with `client.request` and a pass-through schema), so for a 2026-07-28 Tasks
server the package sends `tools/call` and `tasks/*` only through a `rawDispatch` the host passes
(its "host request coordinator"), with `v2RequestFraming` (the per-request `_meta` envelope it
adds itself), and `createTaskSessionFromClient` throws without them. The package's docs on
writing one (adapters-and-schemas.html) are not reachable from here; its .d.ts and .js are what
this follows. tasks.mjs's coordinator is the smallest honest one: a second
`StreamableHTTPClientTransport` of the same SDK, not attached to a Protocol, that gives each
request the package frames a JSON-RPC id, POSTs it (headers derived from the framed body by the
SDK transport) and returns the response unchanged. It also checks every answer to a task message
against the package's exported schema for it (and a completed task's `result` against
`CallToolResultV2Schema`) and logs it, so a mismatch is reported by field, not only as a failed
settlement.

What this proves: a `tools/call` of `run_quantum_circuit` from this requester is answered with a
task (not inline), which the package settles to the Bell counts; a long run is cancelled through
the package's cancel API and the server's task and job both end `cancelled`; a tool without tasks
is still answered inline through the same session; every task message the server sent matches the
package's 2026-07-28 schemas; and the jobs the server recorded (`jobs://`, and each job's own
`quantum_job` receipt) are the ones the package saw.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.home import initialize
from mcp_server.settings import Settings
from tests.quantum.test_run_tool import BELL, slow_circuit
from tests.server.test_transports import start_server

pytestmark = [pytest.mark.subprocess, pytest.mark.interop]

TS_DIR = Path(__file__).parent / "ts"
TASKS = "io.modelcontextprotocol/tasks"
SEED = 7


def run_tasks(plan: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    try:
        done = subprocess.run(
            [node, str(TS_DIR / "tasks.mjs")],
            cwd=TS_DIR,
            input=json.dumps(plan),
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"tasks.mjs hung past {exc.timeout} s")
    try:
        out: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"tasks.mjs exit {done.returncode}, no JSON:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    if done.returncode != 0 or "fatal" in out:
        pytest.fail(f"tasks.mjs exit {done.returncode}: {out.get('fatal')}\nstderr:\n{done.stderr[-4000:]}")
    return out


async def recorded(url: str) -> dict[str, Any]:
    """What the server recorded, read afterwards by our own client: its job list, each job, and
    the `quantum_job` receipts (each job's own, written when it ended)."""
    async with Client(streamable_http_client(url)) as client:

        async def read(uri: str) -> Any:
            return json.loads((await client.read_resource(uri)).contents[0].text)

        listed = (await read("jobs://"))["jobs"]
        jobs = {job["job_id"]: await read(f"jobs://{job['job_id']}") for job in listed}
        with anyio.fail_after(15):
            while True:
                result = await client.call_tool("list_receipts", {"tool": "quantum_job"})
                ended = result.structured_content["receipts"]
                if len(ended) >= len(jobs):
                    break
                await anyio.sleep(0.2)
    return {"jobs": jobs, "job_receipts": {r["backend_job_id"]: r for r in ended}}


@pytest.fixture(scope="module")
def run(npm_installed: float, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("ts-tasks")
    initialize(Settings(home=base / "home", _env_file=None))  # type: ignore[call-arg]
    server = cast(Generator[str], start_server(base, "streamable-http", "--no-auth"))
    url = f"{next(server)}/mcp"
    try:
        out = run_tasks({"url": url, "bell": BELL, "slow": slow_circuit(), "seed": SEED})
        out["recorded"] = anyio.run(recorded, url)
    finally:
        server.close()
    yield out


def step(run: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = run[name]
    assert entry["ok"], f"ext-tasks {run['packages']}: {name} threw: {entry['thrown']}"
    return entry


def wire(run: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [entry for entry in run["wire"] if entry["method"] == method]


def test_the_package_negotiated_2026_07_28_and_the_tasks_extension(run: dict[str, Any]) -> None:
    assert run["packages"] == {
        "@modelcontextprotocol/ext-tasks": "0.2.2",
        "@modelcontextprotocol/client": "2.4.0",
    }
    assert run["protocolVersion"] == "2026-07-28" and run["era"] == "modern"
    # The package takes a server for a Tasks server only when the extension's settings are `{}`.
    assert run["serverTasksCapability"] == {} and run["serverCapabilityValid"] is True
    assert run["sessionCapabilities"]["execution"] and run["sessionCapabilities"]["cancellation"]


def test_a_bell_run_is_answered_with_a_task_that_the_package_settles_to_its_counts(
    run: dict[str, Any],
) -> None:
    bell = step(run, "bell")
    # A task, not an inline result: the package built a task execution from the server's handle.
    assert bell["kind"] == "task" and bell["taskId"]
    created = wire(run, "tools/call")[0]
    assert created["declared"] and created["result"]["resultType"] == "task"
    assert created["result"]["taskId"] == bell["taskId"]
    assert bell["outcome"] == "completed" and "thrown" not in bell
    result = bell["result"]
    assert result["resultType"] == "complete" and result["isError"] is False
    job = result["structuredContent"]
    assert job["status"] == "succeeded" and job["seed"] == SEED
    assert sum(job["counts"].values()) == 1024 and set(job["counts"]) <= {"00", "11"}
    # The package polled the task it was given, and saw its job's progress in statusMessage.
    assert {e["taskId"] for e in wire(run, "tasks/get")} >= {bell["taskId"]}
    assert bell["lastTask"] == {"status": "completed", "statusMessage": f"job {job['job_id']} succeeded"}


def test_a_long_run_is_cancelled_through_the_package(run: dict[str, Any]) -> None:
    slow = step(run, "slow")
    assert slow["kind"] == "task" and slow["taskId"] != step(run, "bell")["taskId"]
    assert slow["sawRunning"], f"the job never ran before the deadline: {slow['statuses']}"
    assert [e["taskId"] for e in wire(run, "tasks/cancel")] == [slow["taskId"]]
    assert slow["outcome"] == "cancelled" and slow["outcomeError"] == "TaskCancelledError"
    # The server's own task (not just the package's local view) ended cancelled.
    assert slow["server"]["status"] == "cancelled"


def test_a_tool_without_tasks_is_answered_inline_through_the_same_session(run: dict[str, Any]) -> None:
    inline = step(run, "inline")
    assert inline["kind"] == "immediate"
    assert inline["result"]["isError"] is False and inline["result"]["structuredContent"]["receipts"]


def test_every_task_message_matches_the_package_schemas(run: dict[str, Any]) -> None:
    methods = {entry["method"] for entry in run["wire"]}
    assert {"tools/call", "tasks/get", "tasks/cancel"} <= methods
    for entry in run["wire"]:
        assert entry["declared"], f"{entry['method']} went out without the extension declared"
        assert entry["response"] == "result", entry
        assert entry["issues"] == [], f"{entry['method']} answer fails {entry['schema']}: {entry['issues']}"


def test_the_jobs_the_server_recorded_are_the_ones_the_package_saw(run: dict[str, Any]) -> None:
    bell = step(run, "bell")["result"]["structuredContent"]
    slow = step(run, "slow")
    jobs = run["recorded"]["jobs"]
    assert set(jobs) == {bell["job_id"], slow["jobId"]}
    assert jobs[bell["job_id"]]["status"] == "succeeded"
    assert jobs[bell["job_id"]]["counts"] == bell["counts"]
    assert jobs[bell["job_id"]]["counts_digest"] == bell["counts_digest"]
    assert jobs[slow["jobId"]]["status"] == "cancelled"
    attested = {
        job_id: json.loads(receipt["attestation"])["status"]
        for job_id, receipt in run["recorded"]["job_receipts"].items()
    }
    assert attested == {bell["job_id"]: "succeeded", slow["jobId"]: "cancelled"}
