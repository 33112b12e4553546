// The mock sends no CORS headers by default, as Runflow sends none: a page of another origin
// (here http://127.0.0.1:PORT calling http://localhost:PORT) cannot read it. MOCK_CORS=1, which
// the browser-test harness sets, lets it.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, startServer } from "./harness.mjs";

let browser;
const servers = [];

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await Promise.all(servers.map((server) => server.stop()));
});

/** From a page of `server`'s 127.0.0.1 origin, what fetches to its localhost origin give. */
async function crossOrigin(env) {
  const server = await startServer(env);
  servers.push(server);
  const other = server.url.replace("127.0.0.1", "localhost");
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    // A document of the 127.0.0.1 origin that makes no calls of its own.
    await page.goto(`${server.url}/api/runflow/_backend`);
    return await page.evaluate(async (other) => {
      const attempt = async (url, init) => {
        try {
          const response = await fetch(url, init);
          return { status: response.status, body: await response.json() };
        } catch (error) {
          return { error: error.name };
        }
      };
      const json = { "content-type": "application/json" };
      return {
        health: await attempt(`${other}/api/runflow/v1/health`),
        create: await attempt(`${other}/api/runflow/v1/models/black-forest-labs/flux-pro/kontext/runs`, { method: "POST", headers: json, body: JSON.stringify({ input: {} }) }),
        scenario: await attempt(`${other}/__mock/scenarios`, { method: "POST", headers: json, body: "{}" }),
        log: await attempt(`${other}/__mock/s/default/log`),
      };
    }, other);
  } finally {
    await context.close();
  }
}

test("by default a page of another origin gets a TypeError from the mock, as from Runflow", async () => {
  const seen = await crossOrigin({});
  for (const [call, result] of Object.entries(seen)) assert.deepEqual(result, { error: "TypeError" }, call);
});

test("with MOCK_CORS=1 the same calls succeed, the control API included", async () => {
  const seen = await crossOrigin({ MOCK_CORS: "1" });
  assert.deepEqual(seen.health, { status: 200, body: { status: "ok" } });
  assert.equal(seen.create.status, 422);
  assert.equal(seen.scenario.status, 201);
  assert.equal(seen.log.status, 200);
});
