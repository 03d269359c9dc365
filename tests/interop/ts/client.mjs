// Drives an MCP server with the official TypeScript SDK client, as a host built on it would.
//
// stdin: one JSON plan
//   {"sdk": "sdk-old" | "sdk-new" | "sdk-v2",
//    "transport": {"kind": "stdio", "command": "...", "args": [...], "env": {...}, "cwd": "..."}
//               | {"kind": "http", "url": "http://127.0.0.1:PORT/mcp", "token": "..."},
//    "calls": [{"name": "...", "arguments": {...}}, ...],
//    "timeoutMs": 60000,        // whole run (optional)
//    "callTimeoutMs": 30000}    // each request (optional)
// stdout: one JSON document
//   {"sdk", "package", "version", "protocolVersion", "tools": [names] | null,
//    "results": [{"ok": true, "result": <CallToolResult as returned>}
//              | {"ok": false, "thrown": "<message>", "errorName", "errorCode", "errorData"}]
//               (each with "ms"),
//    "timingsMs": {"connect", "listTools", "close", "total"}, "fatal"?: "<message>", "timedOut"?: true}
// `listTools()` runs first: it is what arms the SDK's output-schema validation in `callTool`.
// One failing call never stops the others. Exit 0 when the plan ran (whatever the calls did), 1 when
// connecting or listing tools failed, 2 on the overall timeout, 3 on a bad plan.

import { readFileSync } from "node:fs";

// Which modules each alias (package.json) provides. 1.x: one package, deep imports; 2.x: split packages.
const SDKS = {
  "sdk-old": {
    client: "sdk-old/client/index.js",
    stdio: "sdk-old/client/stdio.js",
    http: "sdk-old/client/streamableHttp.js",
    callTool: (client, params, options) => client.callTool(params, undefined, options),
  },
  "sdk-new": {
    client: "sdk-new/client/index.js",
    stdio: "sdk-new/client/stdio.js",
    http: "sdk-new/client/streamableHttp.js",
    callTool: (client, params, options) => client.callTool(params, undefined, options),
  },
  "sdk-v2": {
    client: "sdk-v2",
    stdio: "sdk-v2/stdio",
    http: "sdk-v2",
    callTool: (client, params, options) => client.callTool(params, options),
  },
};

const output = {
  sdk: null,
  package: null,
  version: null,
  protocolVersion: null,
  tools: null,
  results: [],
  timingsMs: {},
};
const started = performance.now();
const since = (t) => Math.round(performance.now() - t);
let printed = false;

function emit(extra = {}, code = 0) {
  if (printed) return;
  printed = true;
  process.stdout.write(JSON.stringify({ ...output, ...extra }) + "\n", () => process.exit(code));
}

function describe(error) {
  const e = error ?? {};
  const out = { ok: false, thrown: e.message ?? String(error), errorName: e.name ?? null };
  if (e.code !== undefined) out.errorCode = e.code;
  if (e.data !== undefined) out.errorData = e.data;
  return out;
}

function packageInfo(alias) {
  // The alias's own package.json, read from disk (the 2.x packages do not export it).
  try {
    const pkg = JSON.parse(readFileSync(new URL(`./node_modules/${alias}/package.json`, import.meta.url), "utf8"));
    return { name: pkg.name, version: pkg.version };
  } catch {
    return { name: null, version: null };
  }
}

async function main() {
  let plan;
  try {
    plan = JSON.parse(readFileSync(0, "utf8"));
  } catch (error) {
    emit({ fatal: `bad plan: ${error.message}` }, 3);
    return;
  }
  const sdk = SDKS[plan.sdk];
  if (!sdk) {
    emit({ fatal: `unknown sdk ${JSON.stringify(plan.sdk)}; one of ${Object.keys(SDKS).join(", ")}` }, 3);
    return;
  }
  output.sdk = plan.sdk;
  const info = packageInfo(plan.sdk);
  output.package = info.name;
  output.version = info.version;

  const timeoutMs = plan.timeoutMs ?? 60_000;
  const callTimeoutMs = plan.callTimeoutMs ?? 30_000;
  const watchdog = setTimeout(() => emit({ timedOut: true, fatal: `run exceeded ${timeoutMs} ms` }, 2), timeoutMs);
  watchdog.unref();

  const { Client } = await import(sdk.client);
  const spec = plan.transport ?? {};
  let transport;
  if (spec.kind === "stdio") {
    const { StdioClientTransport } = await import(sdk.stdio);
    transport = new StdioClientTransport({
      command: spec.command,
      args: spec.args ?? [],
      env: spec.env, // replaces the SDK's minimal default environment when given
      cwd: spec.cwd,
      stderr: "inherit", // the server's log goes to our stderr, which the test captures
    });
  } else if (spec.kind === "http") {
    const { StreamableHTTPClientTransport } = await import(sdk.http);
    const headers = spec.token ? { Authorization: `Bearer ${spec.token}` } : {};
    transport = new StreamableHTTPClientTransport(new URL(spec.url), { requestInit: { headers } });
  } else {
    emit({ fatal: `unknown transport ${JSON.stringify(spec.kind)}` }, 3);
    return;
  }

  const client = new Client({ name: "macroslow-interop", version: "0.0.0" }, { capabilities: {} });
  const options = { timeout: callTimeoutMs };
  try {
    let t = performance.now();
    await client.connect(transport, options);
    output.timingsMs.connect = since(t);
    output.protocolVersion = transport.protocolVersion ?? client.getNegotiatedProtocolVersion?.() ?? null;
    t = performance.now();
    const listed = await client.listTools(undefined, options);
    output.timingsMs.listTools = since(t);
    output.tools = listed.tools.map((t) => t.name);
  } catch (error) {
    await close(client);
    emit({ fatal: describe(error).thrown, fatalError: describe(error) }, 1);
    return;
  }

  for (const call of plan.calls ?? []) {
    const t = performance.now();
    try {
      const result = await sdk.callTool(client, { name: call.name, arguments: call.arguments ?? {} }, options);
      output.results.push({ ok: true, result, ms: since(t) });
    } catch (error) {
      output.results.push({ ...describe(error), ms: since(t) });
    }
  }
  const t = performance.now();
  await close(client);
  output.timingsMs.close = since(t);
  output.timingsMs.total = since(started);
  clearTimeout(watchdog);
  emit();
}

async function close(client) {
  // Closing stops a stdio server (stdin closed, then signals); never wait on it forever.
  await Promise.race([client.close().catch(() => {}), new Promise((r) => setTimeout(r, 5_000).unref())]);
}

main().catch((error) => emit({ fatal: `client crashed: ${error?.stack ?? error}` }, 1));
