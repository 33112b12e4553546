// Proxy mode end to end at the client's level: a Kontext run from the wasm client in Chromium
// through a dev server in proxy mode, whose upstream is a second dev server's mock. The key must
// reach the upstream on every call and never the page.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createScenario, encodePng, launchBrowser, startServer } from "./harness.mjs";

const KEY = "rf_test_key";

let upstream;
let proxy;
let browser;
let scenario;

before(async () => {
  [upstream, browser] = await Promise.all([startServer({ RUNFLOW_API_KEY: undefined }), launchBrowser()]);
  // The mock, run as Runflow would be: it answers 401 to any call without a key.
  scenario = await createScenario(upstream.url, { lifecycle_ms: [50, 50, 150], require_auth: true });
  proxy = await startServer({ RUNFLOW_API_KEY: KEY, RUNFLOW_UPSTREAM: `${upstream.url}${scenario.base}` });
});

after(async () => {
  await browser?.close();
  await Promise.all([proxy?.stop(), upstream?.stop()]);
});

test("KontextClient.run through the proxy: the proxy adds the key, the page never sees it", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Everything the page received, read as it arrives (awaited before the checks).
  const seen = [];
  page.on("response", (response) => {
    const read = Promise.all([response.allHeaders(), response.text()]).catch(() => [{}, ""]);
    seen.push(read.then(([headers, body]) => ({ url: response.url(), headers: JSON.stringify(headers), body })));
  });
  try {
    // A document of the proxy's origin that makes no calls of its own (the demo page has its
    // own test), so every response below comes from the client's calls.
    await page.goto(`${proxy.url}/api/runflow/_backend`);
    const png = encodePng(32, 24, (x, y) => [x * 8, y * 10, 128]);
    const result = await page.evaluate(
      async ({ imageUrl }) => {
        const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
        await init();
        const backend = await (await fetch("/api/runflow/_backend")).json();
        const client = new KontextClient({ baseUrl: "/api/runflow", pollIntervalMs: 50 });
        const run = await client.run({ prompt: "make it teal", image_url: imageUrl });
        return { backend, id: run.id, status: run.status, outputs: run.output.outputs.length };
      },
      { imageUrl: `data:image/png;base64,${png.toString("base64")}` },
    );
    assert.equal(result.status, "succeeded");
    assert.equal(result.outputs, 1);
    assert.deepEqual({ backend: result.backend.backend, upstream: result.backend.upstream }, { backend: "proxy", upstream: upstream.url });
    assert.equal(result.backend.relay.on, false);

    const log = await scenario.log();
    const kinds = new Set(log.map((entry) => entry.kind));
    assert.ok(kinds.has("create") && kinds.has("get"), JSON.stringify([...kinds]));
    for (const entry of log) {
      // The log redacts the key; require_auth answered 401 to any call without a well-formed one.
      assert.equal(entry.headers.authorization, "Bearer [redacted]", `${entry.method} ${entry.path}`);
      assert.notEqual(entry.status, 401);
    }
    const create = log.find((entry) => entry.kind === "create");
    assert.ok(create.headers["idempotency-key"], "the client's Idempotency-Key passes through");
    assert.equal(create.body.input.prompt, "make it teal");

    const responses = await Promise.all(seen);
    assert.ok(responses.some((response) => response.url.includes(`/api/runflow/v1/runs/${result.id}`)));
    for (const response of responses) {
      assert.ok(!response.body.includes(KEY), `key in the body of ${response.url}`);
      assert.ok(!response.headers.includes(KEY), `key in the headers of ${response.url}`);
    }
    assert.ok(!(await page.content()).includes(KEY));
  } finally {
    await context.close();
  }
});
