// The Node route handler of docs/proxy.md, taken from the markdown as it stands and run against
// the dev server's mock (its upstream): what it forwards, what it refuses, and that only the
// checked query reaches Runflow.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const MOCK = process.env.MOCK_URL ?? "http://127.0.0.1:18181";
const KEY = "rf_snippet_key";
const MODEL_PATH = "v1/models/black-forest-labs/flux-pro/kontext/runs";
let handler;
let base;

async function log() {
  return (await (await fetch(`${base}/log`)).json()).requests;
}

/** Calls the handler as Next.js would for `/api/runflow/<path>`. */
function call(method, pathAndQuery, body) {
  const url = new URL(`http://app.example/api/runflow/${pathAndQuery}`);
  const path = url.pathname.replace(/^\/api\/runflow\//, "").split("/");
  const init = { method, headers: body ? { "content-type": "application/json" } : {}, body: body && JSON.stringify(body) };
  return handler(new Request(url, init), { params: Promise.resolve({ path }) });
}

before(async () => {
  const markdown = await readFile(new URL("../../docs/proxy.md", import.meta.url), "utf8");
  const snippet = markdown.match(/```js\n(\/\/ app\/api\/runflow\/\[\.\.\.path\]\/route\.js\n[\s\S]*?)```/)?.[1];
  assert.ok(snippet, "the handler's code block is in docs/proxy.md");
  const lines = snippet.trim().split("\n").length;
  assert.ok(lines <= 32, `the snippet stays short (${lines} lines)`);
  // The mock accepts this key only, so a call that reaches it proves the key was added.
  const created = await fetch(`${MOCK}/__mock/scenarios`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ api_key: KEY, lifecycle_ms: [0, 0, 0] }) });
  assert.equal(created.status, 201);
  base = MOCK + (await created.json()).base_url;
  process.env.RUNFLOW_UPSTREAM = base;
  process.env.RUNFLOW_API_KEY = KEY;
  const dir = await mkdtemp(join(tmpdir(), "proxy-snippet-"));
  const file = join(dir, "route.mjs");
  await writeFile(file, snippet);
  ({ GET: handler } = await import(pathToFileURL(file)));
  await rm(dir, { recursive: true, force: true });
});

test("the snippet forwards the client's calls with the key", async () => {
  const input = { prompt: "make it teal", image_url: "https://example.com/a.png" };
  const create = await call("POST", MODEL_PATH, { input, client_ref: "ref-a" });
  assert.equal(create.status, 201, await create.clone().text());
  const run = await create.json();
  const got = await call("GET", `v1/runs/${run.id}`);
  assert.equal(got.status, 200);
  assert.equal((await call("GET", "v1/health")).status, 200);
  const search = await call("GET", "v1/runs?q=client_ref:ref-a&limit=5");
  assert.equal(search.status, 200);
  assert.deepEqual((await search.json()).items.map((r) => r.id), [run.id]);
  const quoted = await call("GET", `v1/runs?q=${encodeURIComponent('client_ref:"ref-a"')}`);
  assert.equal(quoted.status, 200);
  const searches = (await log()).filter((e) => e.kind === "search");
  assert.deepEqual(searches.map((e) => e.query), ["q=client_ref%3Aref-a&limit=5", "q=client_ref%3A%22ref-a%22"]);
  assert.ok((await log()).every((e) => e.status !== 401), "every call carried the key");
});

test("the snippet refuses broader searches, repeated or unknown parameters, and other paths", async () => {
  const before = (await log()).length;
  for (const [method, path] of [
    ["GET", "v1/runs?q=client_ref:x&q=status:succeeded&limit=100"],
    ["GET", "v1/runs?q=client_ref:x&limit=5&limit=6"],
    ["GET", "v1/runs?q=client_ref:x&page=2"],
    ["GET", "v1/runs?q=status:succeeded"],
    ["GET", "v1/runs?limit=5"],
    ["GET", "v1/runs"],
    ["GET", `v1/runs?q=${encodeURIComponent('client_ref:"a\\" OR status:succeeded"')}`],
    ["GET", "v1/runs?q=client_ref:x&limit=101"],
    ["GET", "v1/runs/abc/callback"],
    ["POST", "v1/callback-secrets"],
    ["POST", "v1/models/acme/flux/runs"],
  ]) {
    const response = await call(method, path, method === "POST" ? {} : undefined);
    assert.equal(response.status, 403, `${method} ${path}`);
    assert.equal((await response.json()).code, "path_not_allowed");
  }
  assert.equal((await log()).length, before, "nothing refused reached the API");
});
