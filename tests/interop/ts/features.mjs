// Beside client.mjs (tools): the server's resources, prompts and completions through the official
// TypeScript SDK client, at the pinned aliases in package.json (sdk-old, sdk-new: 1.x; sdk-v2: 2.x).
//
// stdin: one JSON plan
//   {"sdk": "sdk-old" | "sdk-new" | "sdk-v2",
//    "transport": {"kind": "stdio", "command", "args", "env", "cwd"} | {"kind": "http", "url"},
//    "resource": "maml://workflows",
//    "prompt": {"name": "...", "arguments": {...}},
//    "completion": {"ref": {"type": "ref/prompt", "name": "..."}, "argument": {"name", "value"}}}
// stdout: one JSON document
//   {"sdk", "package", "version", "protocolVersion", "capabilities",
//    "resource" | "prompts" | "prompt" | "completion": {"ok": true, "result"} | {"ok": false, "thrown"}}
// One failing step never stops the others; exit 1 only when connecting failed (then "fatal").

import { readFileSync } from "node:fs";

const MODULES = {
  "sdk-old": { client: "sdk-old/client/index.js", stdio: "sdk-old/client/stdio.js", http: "sdk-old/client/streamableHttp.js" },
  "sdk-new": { client: "sdk-new/client/index.js", stdio: "sdk-new/client/stdio.js", http: "sdk-new/client/streamableHttp.js" },
  "sdk-v2": { client: "sdk-v2", stdio: "sdk-v2/stdio", http: "sdk-v2" },
};

function emit(doc, code = 0) {
  process.stdout.write(JSON.stringify(doc) + "\n", () => process.exit(code));
}

async function step(run) {
  try {
    return { ok: true, result: await run() };
  } catch (error) {
    return { ok: false, thrown: error?.message ?? String(error), errorCode: error?.code ?? null };
  }
}

async function main() {
  const plan = JSON.parse(readFileSync(0, "utf8"));
  const modules = MODULES[plan.sdk];
  const pkg = JSON.parse(readFileSync(new URL(`./node_modules/${plan.sdk}/package.json`, import.meta.url), "utf8"));
  const out = { sdk: plan.sdk, package: pkg.name, version: pkg.version };
  const watchdog = setTimeout(() => emit({ ...out, fatal: "run exceeded 90 s" }, 2), 90_000);
  watchdog.unref();

  const { Client } = await import(modules.client);
  let transport;
  if (plan.transport.kind === "stdio") {
    const { StdioClientTransport } = await import(modules.stdio);
    const { command, args, env, cwd } = plan.transport;
    transport = new StdioClientTransport({ command, args, env, cwd, stderr: "inherit" });
  } else {
    const { StreamableHTTPClientTransport } = await import(modules.http);
    transport = new StreamableHTTPClientTransport(new URL(plan.transport.url));
  }
  const client = new Client({ name: "macroslow-interop-features", version: "0.0.0" }, { capabilities: {} });
  const options = { timeout: 30_000 };
  try {
    await client.connect(transport, options);
  } catch (error) {
    emit({ ...out, fatal: error?.message ?? String(error) }, 1);
    return;
  }
  out.protocolVersion = transport.protocolVersion ?? client.getNegotiatedProtocolVersion?.() ?? null;
  out.capabilities = client.getServerCapabilities() ?? null;
  out.resource = await step(() => client.readResource({ uri: plan.resource }, options));
  out.prompts = await step(() => client.listPrompts({}, options));
  out.prompt = await step(() => client.getPrompt(plan.prompt, options));
  out.completion = await step(() => client.complete(plan.completion, options));
  await Promise.race([client.close().catch(() => {}), new Promise((r) => setTimeout(r, 5_000).unref())]);
  clearTimeout(watchdog);
  emit(out);
}

main().catch((error) => emit({ fatal: `client crashed: ${error?.stack ?? error}` }, 1));
