// The tasks extension (io.modelcontextprotocol/tasks, 2026-07-28) through the official TypeScript
// requester, @modelcontextprotocol/ext-tasks (package.json pins it and its peer
// @modelcontextprotocol/client under their real names), over Streamable HTTP.
//
// The package drives the tasks: `createTaskSessionFromClient` on a connected 2.x `Client`,
// `session.callTool` (which declares the extension and recognises the task handle), the
// execution's `settle()` (which polls tasks/get until the task ends) and `cancel()` (tasks/cancel).
// For a 2026-07-28 server the package needs the host to hand it `rawDispatch` (the SDK Client's
// own request path throws UNSUPPORTED_RESULT_TYPE on a tools/call answered with
// `resultType: "task"`) and `v2RequestFraming` (the per-request _meta envelope). Here the
// host's request coordinator is a second `StreamableHTTPClientTransport` of the same SDK,
// not connected to a Protocol: it gives each request the package frames a JSON-RPC id, POSTs it
// (the transport derives MCP-Protocol-Version, Mcp-Method and Mcp-Name from the framed body) and
// hands the package the response. Every answer to a task message is also checked against the
// package's own 2026-07-28 schemas (core/v2) and logged in `wire`.
//
// stdin: one JSON plan
//   {"url": "http://127.0.0.1:<port>/mcp", "bell": "<qasm>", "slow": "<qasm>", "seed": 7}
// stdout: one JSON document
//   {"packages": {...}, "protocolVersion", "era", "serverTasksCapability", "sessionCapabilities",
//    "bell": {"kind", "taskId", "events", "outcome", "result" | "thrown"},
//    "slow": {"kind", "taskId", "jobId", "sawRunning", "outcome", "server", ...},
//    "inline": {"kind", "result"} (list_receipts, not task-backed),
//    "wire": [{"method", "taskId", "declared", "response": "result" | "error", "result" | "error", "schema", "issues"}]}
// Exit 1 (with "fatal") only when connecting failed or the run crashed.

import { readFileSync } from "node:fs";

import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { createTaskSessionFromClient, resultFromTaskOutcome } from "@modelcontextprotocol/ext-tasks/client";
import {
  CallToolResultV2Schema,
  CancelTaskResultV2Schema,
  CreateTaskResultV2Schema,
  GetTaskResultV2Schema,
  UpdateTaskResultV2Schema,
  hasTaskServerCapabilityV2,
} from "@modelcontextprotocol/ext-tasks/core/v2";

const TASKS = "io.modelcontextprotocol/tasks";
const CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities";
const PROTOCOL = "2026-07-28";
const CLIENT_INFO = { name: "macroslow-interop-ext-tasks", version: "0.0.0" };
const CLIENT_CAPABILITIES = { extensions: { [TASKS]: {} } };
const REQUEST_TIMEOUT_MS = 30_000;

function emit(doc, code = 0) {
  process.stdout.write(JSON.stringify(doc) + "\n", () => process.exit(code));
}

function version(name) {
  const url = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

function issues(schema, value) {
  const parsed = schema.safeParse(value);
  return parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
}

/** The package's schema for the answer to `method` (null: not a task message). */
function schemaFor(method, result) {
  if (method === "tools/call")
    return result?.resultType === "task"
      ? ["CreateTaskResultV2Schema", CreateTaskResultV2Schema]
      : ["CallToolResultV2Schema", CallToolResultV2Schema];
  if (method === "tasks/get") return ["GetTaskResultV2Schema", GetTaskResultV2Schema];
  if (method === "tasks/cancel") return ["CancelTaskResultV2Schema", CancelTaskResultV2Schema];
  if (method === "tasks/update") return ["UpdateTaskResultV2Schema", UpdateTaskResultV2Schema];
  return null;
}

/** The host's request coordinator: raw JSON-RPC over the SDK's Streamable HTTP client transport. */
class RawCoordinator {
  constructor(url) {
    this.transport = new StreamableHTTPClientTransport(new URL(url));
    this.pending = new Map();
    this.next = 1;
    this.wire = [];
    this.transport.onmessage = (message) => {
      const waiter = "id" in message ? this.pending.get(message.id) : undefined;
      if (waiter === undefined) return; // notifications on a request's stream: not a task answer
      this.pending.delete(message.id);
      waiter.resolve(message);
    };
    this.transport.onerror = () => {}; // a failed send rejects its own dispatch below
  }

  start() {
    return this.transport.start();
  }

  close() {
    return this.transport.close();
  }

  dispatch = async (request, options = {}) => {
    const id = `ext-tasks-${this.next++}`;
    const message = { jsonrpc: "2.0", id, ...request };
    const timeoutMs = options.context?.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    let timer;
    const answered = new Promise((resolve, reject) => {
      this.pending.set(id, { resolve });
      timer = setTimeout(() => reject(new Error(`${request.method} not answered in ${timeoutMs} ms`)), timeoutMs);
    });
    let response;
    try {
      await this.transport.send(message, {
        ...(options.signal === undefined ? {} : { requestSignal: options.signal }),
        ...(options.context?.headers === undefined ? {} : { headers: options.context.headers }),
      });
      response = await answered;
    } finally {
      clearTimeout(timer);
      this.pending.delete(id);
    }
    const declared = Object.hasOwn(request.params?._meta?.[CLIENT_CAPABILITIES_META]?.extensions ?? {}, TASKS);
    const entry = { method: request.method, taskId: request.params?.taskId ?? null, declared };
    if ("error" in response) {
      this.wire.push({ ...entry, response: "error", error: response.error });
      return { kind: "error", error: response.error };
    }
    const result = response.result;
    const schema = schemaFor(request.method, result);
    const found = schema === null ? [] : issues(schema[1], result);
    // A completed task carries the tool's result: it must itself be a 2026-07-28 CallToolResult.
    if (request.method === "tasks/get" && result?.status === "completed")
      found.push(...issues(CallToolResultV2Schema, result.result).map((i) => `result.${i}`));
    this.wire.push({ ...entry, response: "result", result, schema: schema?.[0] ?? null, issues: found });
    return { kind: "result", result };
  };
}

async function step(run) {
  try {
    return { ok: true, ...(await run()) };
  } catch (error) {
    return { ok: false, thrown: `${error?.name ?? "Error"}: ${error?.message ?? String(error)}` };
  }
}

/** A Bell circuit through the package: task-backed, settled by the package's own polling. */
async function bell(session, plan) {
  const execution = await session.callTool("run_quantum_circuit", { circuit: plan.bell, seed: plan.seed });
  const out = { kind: execution.kind, taskId: execution.handle?.taskId ?? null, events: [] };
  const { outcome, lastTask } = await execution.settle({
    onEvent: (event) => {
      if (event.type === "task") out.events.push({ status: event.task.status, statusMessage: event.task.statusMessage });
    },
  });
  out.outcome = outcome.status;
  out.lastTask = lastTask === undefined ? null : { status: lastTask.status, statusMessage: lastTask.statusMessage };
  try {
    out.result = resultFromTaskOutcome(outcome);
  } catch (error) {
    out.thrown = `${error?.name}: ${error?.message}`;
  }
  return out;
}

/** A tool that is not task-backed, through the same session: answered inline. */
async function inline(session) {
  const execution = await session.callTool("list_receipts", { tool: "run_quantum_circuit" });
  return { kind: execution.kind, result: resultFromTaskOutcome(await execution.result()) };
}

/** A long circuit through the package, cancelled by its cancel API once the job runs. */
async function slow(session, plan) {
  const execution = await session.callTool("run_quantum_circuit", { circuit: plan.slow });
  const out = { kind: execution.kind, taskId: execution.handle?.taskId ?? null, statuses: [] };
  if (execution.kind !== "task") {
    out.result = resultFromTaskOutcome(await execution.result());
    return out;
  }
  // Watch the package's task views until the server says the job runs (statusMessage
  // "job <id> running"), then cancel through the execution.
  const deadline = Date.now() + 60_000;
  for await (const event of execution.updates()) {
    if (event.type !== "task") {
      out.endedBeforeCancel = event.outcome.status;
      return out;
    }
    out.statuses.push(event.task.statusMessage ?? event.task.status);
    const match = /^job (\S+) (\S+)$/.exec(event.task.statusMessage ?? "");
    if (match) out.jobId = match[1];
    if (match?.[2] === "running" || Date.now() > deadline) {
      out.sawRunning = match?.[2] === "running";
      break;
    }
  }
  await execution.cancel();
  out.cancelAcknowledged = true;
  const { outcome } = await execution.settle();
  out.outcome = outcome.status;
  try {
    resultFromTaskOutcome(outcome);
  } catch (error) {
    out.outcomeError = error?.name ?? String(error);
  }
  // The package ends its local lifetime at the cancel acknowledgement (cancellation is
  // cooperative), so ask the server, through a task controller of the same session, until the
  // task itself says it ended.
  const controller = session.task(out.taskId);
  const until = Date.now() + 30_000;
  let view;
  do {
    view = await controller.snapshot();
    if (view.status !== "working") break;
    await new Promise((r) => setTimeout(r, 200));
  } while (Date.now() < until);
  out.server = { status: view.status, statusMessage: view.statusMessage ?? null };
  return out;
}

async function main() {
  const plan = JSON.parse(readFileSync(0, "utf8"));
  const out = {
    packages: {
      "@modelcontextprotocol/ext-tasks": version("@modelcontextprotocol/ext-tasks"),
      "@modelcontextprotocol/client": version("@modelcontextprotocol/client"),
    },
  };
  const watchdog = setTimeout(() => emit({ ...out, fatal: "run exceeded 150 s" }, 2), 150_000);
  watchdog.unref();

  const client = new Client(CLIENT_INFO, {
    capabilities: CLIENT_CAPABILITIES,
    versionNegotiation: { mode: { pin: PROTOCOL } },
  });
  const transport = new StreamableHTTPClientTransport(new URL(plan.url));
  try {
    await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  } catch (error) {
    emit({ ...out, fatal: `connect: ${error?.message ?? String(error)}` }, 1);
    return;
  }
  out.protocolVersion = client.getNegotiatedProtocolVersion() ?? null;
  out.era = client.getProtocolEra() ?? null;
  const capabilities = client.getServerCapabilities() ?? {};
  out.serverTasksCapability = capabilities.extensions?.[TASKS] ?? null;
  out.serverCapabilityValid = hasTaskServerCapabilityV2(capabilities);

  const coordinator = new RawCoordinator(plan.url);
  await coordinator.start();
  const session = createTaskSessionFromClient(client, {
    endpointId: plan.url,
    rawDispatch: coordinator.dispatch,
    v2RequestFraming: {
      protocolVersion: out.protocolVersion,
      clientInfo: CLIENT_INFO,
      clientCapabilities: CLIENT_CAPABILITIES,
    },
  });
  out.sessionCapabilities = session.capabilities;
  try {
    out.bell = await step(() => bell(session, plan));
    out.slow = await step(() => slow(session, plan));
    out.inline = await step(() => inline(session));
  } finally {
    await session.close().catch(() => {});
    await coordinator.close().catch(() => {});
    await Promise.race([client.close().catch(() => {}), new Promise((r) => setTimeout(r, 5_000).unref())]);
  }
  out.wire = coordinator.wire;
  clearTimeout(watchdog);
  emit(out);
}

main().catch((error) => emit({ fatal: `crashed: ${error?.stack ?? error}` }, 1));
