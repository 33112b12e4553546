// The page through the dev server's proxy mode (RUNFLOW_API_KEY set): here the "real API" is a
// second dev server's mock scenario, so the key and the proxy's limits are seen end to end.

import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { after, before, test } from "node:test";
import {
  createScenario,
  launchBrowser,
  openPage,
  screenshot,
  startServer,
  text,
  waitForResult,
  writeFixtures,
} from "./harness.mjs";

const KEY = "rf_e2e_proxy_key_123";
let upstream;
let browser;
let fixtures;
const proxies = [];

async function startProxy(scenario, env = {}) {
  const proxy = await startServer({
    RUNFLOW_API_KEY: KEY,
    RUNFLOW_UPSTREAM: `${upstream.url}${scenario.base}/`,
    ...env,
  });
  proxies.push(proxy);
  return proxy;
}

before(async () => {
  fixtures = writeFixtures();
  // MOCK_CORS=1: the page is on the proxy's origin, and the upload's PUT and the output files go
  // straight to the upstream mock's (standing in for Runflow's storage), another origin.
  [upstream, browser] = await Promise.all([startServer({ MOCK_CORS: "1" }), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await Promise.all(proxies.map((proxy) => proxy.stop()));
  await upstream?.stop();
  if (fixtures) await rm(fixtures.dir, { recursive: true, force: true });
});

test("through the proxy: labelled as Runflow, the key stays on the server, the edit works", async () => {
  const scenario = await createScenario(upstream.url, { require_auth: true });
  const proxy = await startProxy(scenario, { PROXY_MAX_BODY_BYTES: "2000000" });
  const { context, page, problems } = await openPage(browser);
  try {
    await page.goto(`${proxy.url}/`);
    await page.waitForFunction(() => document.getElementById("backend").dataset.state !== "checking");
    assert.equal(await page.getAttribute("#backend", "data-state"), "remote");
    assert.match(await text(page, "#backend-label"), /^Runflow via \/api\/runflow → 127\.0\.0\.1:\d+$/);
    assert.doesNotMatch(await text(page, "#cost"), /free/);

    await page.setInputFiles("#file", fixtures.sunset);
    await page.fill("#prompt", "make it a snowy winter night");
    await page.click("#run");
    await waitForResult(page);
    assert.doesNotMatch(await text(page, "#facts"), /free here/);
    await screenshot(page, "30-proxy-result");

    const create = (await scenario.log()).find((entry) => entry.kind === "create");
    // The mock's log shows that a key was sent, never the key; require_auth refused any call without one.
    assert.equal(create.headers.authorization, "Bearer [redacted]");
    assert.equal(create.status, 201);
    const html = await page.content();
    assert.ok(!html.includes(KEY), "the key reached the page");
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("through the proxy, a picture over 1 MiB is uploaded: the pair via the proxy with the key, the PUT straight to storage without it", async () => {
  const scenario = await createScenario(upstream.url, { require_auth: true });
  // The default cap: too small for this picture inline, which is why it is uploaded.
  const proxy = await startProxy(scenario);
  const { context, page, problems } = await openPage(browser);
  try {
    await page.goto(`${proxy.url}/`);
    await page.setInputFiles("#file", fixtures.big);
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready", null, { timeout: 20_000 });
    await page.fill("#prompt", "make it calmer");
    await page.click("#run");
    await waitForResult(page);
    const log = (await scenario.log()).filter((entry) => entry.kind !== "health");
    assert.deepEqual(log.slice(0, 4).map((entry) => entry.kind), ["upload_create", "upload_put", "upload_confirm", "create"]);
    assert.equal(log[0].headers.authorization, "Bearer [redacted]");
    assert.equal(log[2].headers.authorization, "Bearer [redacted]");
    assert.equal(log[1].headers.authorization, undefined, "no key on the presigned PUT");
    assert.match(log[3].body.input.image_url, /\/__mock\/assets\//);
    assert.ok(!(await page.content()).includes(KEY));
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("a proxy body cap smaller than the picture: the page uploads it (uploadImage always does), so nothing is refused", async () => {
  const scenario = await createScenario(upstream.url);
  // The dev server allows 1.5 MiB (a 1 MiB picture inline); Runflow's own proxy defaults to 32 KiB.
  const proxy = await startProxy(scenario, { PROXY_MAX_BODY_BYTES: "20000" });
  const { context, page, problems } = await openPage(browser);
  try {
    await page.goto(`${proxy.url}/`);
    await page.click("#sample");
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready");
    await page.fill("#prompt", "make it autumn");
    await page.click("#run");
    await waitForResult(page);
    const kinds = async () => (await scenario.log()).map((entry) => entry.kind).filter((kind) => kind !== "health" && kind !== "get");
    // Uploaded first, then a create small enough for any cap.
    assert.deepEqual(await kinds(), ["upload_create", "upload_put", "upload_confirm", "create"]);
    assert.match((await scenario.log()).find((entry) => entry.kind === "create").body.input.image_url, /\/__mock\/assets\//);
    await screenshot(page, "31-proxy-too-large-uploaded");

    // The next edit of the same picture reuses the asset URL.
    const before = (await kinds()).length;
    await page.fill("#prompt", "make it winter");
    await page.click("#run");
    for (const until = Date.now() + 20_000; !(await kinds()).slice(before).includes("create") && Date.now() < until; ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const creates = (await scenario.log()).filter((entry) => entry.kind === "create");
    assert.equal(creates.length, 2);
    assert.match(creates[1].body.input.image_url, /\/__mock\/assets\//);
    assert.deepEqual(problems.filter((p) => !p.includes("413")), []);
  } finally {
    await context.close();
  }
});
