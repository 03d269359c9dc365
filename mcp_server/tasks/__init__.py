"""Tasks: the MCP tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663), on durable SQL rows.

A client that declares the extension on a `tools/call` (protocol 2026-07-28) may be answered with a
task handle (`resultType: "task"`) instead of the tool's result, for the tools that declare
`task=` (`ToolRegistry.tool`):

- `task="job"` (`run_quantum_circuit`): the call is decided and its job submitted as without tasks,
  answered at once (no inline wait); the task follows the job's row (`jobs://<id>`), so any replica
  can answer for it and it outlives the process that started it (a local job whose process dies is
  `interrupted`: the task fails with -32603).
- `task="deferred"` (`query_openai`): the call is admitted and decided at once (a refusal comes back
  as a normal error result, no task); its body then runs in this process after the answer, and
  its result (with its receipt) is stored on the task. The process beats a heartbeat on the row;
  when it stops beating, another process fails the task with -32603.

Every task is created (committed) before its handle is returned. Only the caller who created a
task can see it: to anyone else `tasks/get`, `tasks/update` and `tasks/cancel` say -32602 "task not
found", as for a task that never existed. No token is stored with a task, only the caller's
principal URI. `ttlMs` is the job retention (`MACROSLOW_JOB_RETENTION_SECONDS`; null when 0):
a task is deleted once that long has passed since its creation and it has ended.
`pollIntervalMs` is `MACROSLOW_TASK_POLL_SECONDS` (an Azure job's: its first poll interval, as our
own poller learns no sooner).

`store` keeps the rows, `service` creates, reads, cancels and runs them, `extension` serves the
three methods and advertises the extension.
"""

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
