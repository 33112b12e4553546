// The package as a JS user meets it, in Node 20: named exports, RunflowError as a real class,
// an API key allowed outside the browser, a run end to end against the dev server's mock.
import { test } from "node:test";
import assert from "node:assert/strict";
// The Node entry, as the package's "node" condition resolves it: ready on import.
import { KontextClient, RunflowError, verifyCallbackSignature } from "../../pkg/node.js";
import * as browserBuild from "../../pkg/runflow_kontext.js";

const MOCK = process.env.MOCK_URL ?? "http://127.0.0.1:18181";
const PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAbElEQVR42hXNQRUAUQhCUaMYhShGeVGIQhSizB+XXA7ODDtouIHBQ4YOM8suWm5h8ZKl+0CskDiBsIioHhx76LiDw0eO3oN/4FVf+J8h0PduzBqZ8x/bxNQPwgaFy192SGgelC0q13/CJaXlA8Z7WAFXOTbyAAAAAElFTkSuQmCC";

async function scenario(config = {}) {
  const response = await fetch(`${MOCK}/__mock/scenarios`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(config) });
  assert.equal(response.status, 201);
  const { base_url } = await response.json();
  const baseUrl = MOCK + base_url;
  return { baseUrl, log: async () => (await (await fetch(`${baseUrl}/log`)).json()).requests };
}

test("a run succeeds from Node with an API key, sent as a Bearer header", async () => {
  const mock = await scenario();
  const client = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", pollIntervalMs: 20 });
  const statuses = [];
  const run = await client.run({ prompt: "make it snow", image_url: PNG, num_images: 2 }, { onStatus: (r) => statuses.push(r.status) });
  assert.equal(run.status, "succeeded");
  assert.equal(run.output.outputs.length, 2);
  // Each change once, in lifecycle order (a loaded machine may poll past a short phase).
  const order = ["queued", "dispatching", "running", "succeeded"];
  assert.deepEqual(statuses, order.filter((status) => statuses.includes(status)));
  assert.equal(statuses[0], "queued");
  assert.equal(statuses.at(-1), "succeeded");
  assert.equal((await mock.log())[0].headers.authorization, "Bearer [redacted]"); // the log hides the key itself
  assert.equal(client.model, "black-forest-labs/flux-pro/kontext");
});

test("failures are RunflowError instances with every documented field", async () => {
  const mock = await scenario({ faults: [{ on: "create", action: { type: "error", status: 402, request_id: "req_node" } }] });
  const client = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node" });
  const error = await client.run({ prompt: "p", image_url: PNG }).catch((e) => e);
  assert.ok(error instanceof RunflowError);
  assert.ok(error instanceof Error);
  assert.equal(error.name, "RunflowError");
  assert.equal(error.code, "insufficient_credit");
  assert.equal(error.status, 402);
  assert.equal(error.requestId, "req_node");
  assert.equal(error.retryable, false);
  assert.equal(error.runId, undefined);
  assert.match(error.message, /add credit/);
  assert.ok(!JSON.stringify(error).includes("rf_live_node") && !error.message.includes("rf_live_node"));
});

test("validation errors reject before any request and name the field", async () => {
  const mock = await scenario();
  const client = new KontextClient({ baseUrl: mock.baseUrl });
  for (const [input, field] of [[{ prompt: "p", image_url: PNG, guidance_scale: NaN }, "guidance_scale"], [{ prompt: "p", image_url: PNG, seed: 1.5 }, "seed"]]) {
    const error = await client.createRun(input).catch((e) => e);
    assert.ok(error instanceof RunflowError);
    assert.equal(error.code, "validation_error");
    assert.equal(error.field, field);
  }
  assert.throws(() => new KontextClient({ timeoutMs: "soon" }), (e) => e instanceof RunflowError && e.field === "timeoutMs");
  assert.equal((await mock.log()).length, 0);
});

test("verifyCallbackSignature takes strings, bytes and secret lists", () => {
  const body = "what do ya want for nothing?";
  const signature = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  assert.equal(verifyCallbackSignature(body, signature, "Jefe"), true);
  assert.equal(verifyCallbackSignature(new TextEncoder().encode(body), signature, ["old", "Jefe"]), true);
  assert.equal(verifyCallbackSignature(body, signature, "wrong"), false);
  assert.equal(verifyCallbackSignature(body, undefined, "Jefe"), false);
  // Servers receive callbacks, browsers do not: the browser build leaves the HMAC out.
  assert.equal(browserBuild.verifyCallbackSignature, undefined);
  assert.equal(typeof browserBuild.KontextClient, "function");
});

test("a Buffer uploads from Node by fetch (no XMLHttpRequest), with the key only on API calls", async () => {
  const mock = await scenario();
  const client = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", uploadThreshold: 0, prepareImage: true, pollIntervalMs: 20 });
  const bytes = Buffer.from(PNG.split(",")[1], "base64");
  const progress = [];
  const run = await client.run({ prompt: "make it snow", image: bytes }, { onUploadProgress: (p) => progress.push(p) });
  assert.equal(run.status, "succeeded");
  const log = await mock.log();
  assert.deepEqual(log.slice(0, 4).map((e) => e.kind), ["upload_create", "upload_put", "upload_confirm", "create"]);
  assert.equal(log[1].headers.authorization, undefined);
  assert.equal(log[0].headers.authorization, "Bearer [redacted]");
  assert.deepEqual(progress, [{ loaded: bytes.length, total: bytes.length }]);
  // uploadImage always uploads, however small: a proxy's body cap would refuse it inline.
  const uploaded = await new KontextClient({ baseUrl: mock.baseUrl }).uploadImage(new Blob([bytes]));
  assert.match(uploaded, /\/__mock\/assets\//);
});

test("runMany, watch and the run store work from the Node entry too", async () => {
  const mock = await scenario({ lifecycle_ms: [20, 20, 60] });
  const client = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", pollIntervalMs: 20 });
  const inputs = ["a", "b", "c"].map((prompt) => ({ prompt, image_url: PNG }));
  const results = await client.runMany(inputs, { concurrency: 2 });
  assert.deepEqual(results.map((r) => [r.ok, r.run?.input.prompt]), [[true, "a"], [true, "b"], [true, "c"]]);
  const { id } = await client.createRun(inputs[0]);
  const seen = [];
  for await (const run of client.watch(id)) seen.push(run.status);
  assert.equal(seen.at(-1), "succeeded");
  const store = client.createRunStore();
  await store.start(inputs[1]);
  assert.equal(store.getSnapshot().status, "succeeded");
  // The glue alone (pkg/runflow_kontext.js) is the bare class; the entries add these.
  assert.equal(typeof browserBuild.KontextClient.prototype.runMany, "undefined");
});

test("persist in Node takes a `storage` (there is no IndexedDB or localStorage): runs are kept until delivered", async () => {
  const mock = await scenario({ lifecycle_ms: [20, 20, 60] });
  const invalid = (options) => {
    try {
      new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", ...options });
    } catch (error) {
      return { code: error.code, field: error.field };
    }
  };
  assert.deepEqual(invalid({ persist: true }), { code: "validation_error", field: "persist" });
  assert.deepEqual(invalid({ persist: "yes" }), { code: "validation_error", field: "persist" });
  assert.deepEqual(invalid({ storage: {} }), { code: "validation_error", field: "storage" });
  // An async Web Storage, as React Native's AsyncStorage or a key-value store would give.
  const items = new Map();
  const storage = { getItem: async (key) => items.get(key) ?? null, setItem: async (key, value) => void items.set(key, value) };
  const client = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", storage, pollIntervalMs: 20 });
  const created = await client.createRun({ prompt: "kept", image_url: PNG });
  const later = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", storage, pollIntervalMs: 20 });
  const kept = await later.resumeRuns();
  assert.deepEqual(kept.map((run) => run.id), [created.id]);
  assert.equal((await kept[0].wait()).status, "succeeded");
  assert.deepEqual(await later.resumeRuns(), []);
  await assert.rejects(new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node" }).resumeRuns(), { code: "validation_error", field: "persist" });
});

test("a storage that fails to read loses no record: the change it was for fails alone", async () => {
  const mock = await scenario({ lifecycle_ms: [20, 20, 60000] });
  const items = new Map();
  let failReads = 0;
  const storage = {
    getItem: async (key) => {
      if (failReads > 0 && failReads--) throw new Error("the store is briefly unreachable");
      return items.get(key) ?? null;
    },
    setItem: async (key, value) => void items.set(key, value),
  };
  const client = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", storage });
  const kept = await client.createRun({ prompt: "kept", image_url: PNG });
  failReads = 1;
  const warn = console.warn;
  const warnings = [];
  console.warn = (...args) => warnings.push(args.join(" "));
  try {
    await client.createRun({ prompt: "not recorded", image_url: PNG });
  } finally {
    console.warn = warn;
  }
  assert.match(warnings.join("\n"), /persisted store failed/);
  const later = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", storage });
  assert.deepEqual((await later.resumeRuns()).map((run) => run.id), [kept.id], "the earlier record survives the failed read");
});

test("null options are no options, as the wasm reads them; a subclass's refusals are RunflowErrors", async () => {
  const mock = await scenario({ lifecycle_ms: [20, 20, 60] });
  class Mine extends KontextClient {}
  const client = new Mine({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", pollIntervalMs: 20 });
  const [result] = await client.runMany([{ prompt: "one", image_url: PNG }], null);
  assert.equal(result.run.status, "succeeded");
  const statuses = [];
  for await (const run of client.watch(result.run.id, null)) statuses.push(run.status);
  assert.deepEqual(statuses, ["succeeded"]);
  assert.equal((await client.createRunStore().start({ prompt: "two", image_url: PNG }, null)).status, "succeeded");
  const refused = await client.runMany([], { concurrency: 0 }).catch((error) => error);
  assert.ok(refused instanceof RunflowError, `${refused}`);
  assert.equal(refused.field, "concurrency");
});

test("the Node entry never shares waits, even where Node has Web Locks: each call asks the server with its own key", async () => {
  const mock = await scenario({ lifecycle_ms: [20, 20, 60] });
  // Web Locks as Node 24 has them; a shared wait would call request().
  const locks = { request: () => Promise.reject(new Error("a Node wait used Web Locks")) };
  Object.defineProperty(globalThis, "navigator", { value: { locks }, configurable: true });
  try {
    const client = new KontextClient({ baseUrl: mock.baseUrl, apiKey: "rf_live_node", pollIntervalMs: 20 });
    const { id } = await client.createRun({ prompt: "mine", image_url: PNG });
    const storage = new Map();
    const persisted = new KontextClient({
      baseUrl: mock.baseUrl,
      apiKey: "rf_live_node",
      pollIntervalMs: 20,
      storage: { getItem: (key) => storage.get(key) ?? null, setItem: (key, value) => void storage.set(key, value) },
    });
    const [plain, kept] = await Promise.all([client.waitForRun(id), persisted.waitForRun(id)]);
    assert.equal(plain.status, "succeeded");
    assert.equal(kept.status, "succeeded");
    const gets = (await mock.log()).filter((entry) => entry.kind === "get");
    assert.ok(gets.length >= 2, "each call polled for itself");
  } finally {
    delete globalThis.navigator;
  }
});
