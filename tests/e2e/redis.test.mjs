// Two dev-server instances behind one public address, sharing a real redis-server (issue 13): a
// browser on instance B waits by push for a run whose callback Runflow (a third server's mock)
// delivers to instance A. Only Redis connects them.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { connect } from "node:net";
import { after, before, test } from "node:test";
import { createScenario, encodePng, freePort, launchBrowser, startServer } from "./harness.mjs";

const SECRET = "whsec_e2e_redis";
const KEY = "rf_test_key_redis";
const IMAGE = `data:image/png;base64,${encodePng(16, 12, (x, y) => [x * 16, y * 20, 90]).toString("base64")}`;

let redis;
let upstream;
let a;
let b;
let browser;
let scenario;

/** A throwaway redis-server (Debian's, installed by scripts/setup.sh) on a free port. */
async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  child.on("error", (error) => assert.fail(`redis-server did not start (${error.message}): run scripts/setup.sh`));
  for (let tries = 0; tries < 100; tries++) {
    const ready = await new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1", () => (socket.end(), resolve(true)));
      socket.on("error", () => resolve(false));
    });
    if (ready) return { url: `redis://127.0.0.1:${port}/0`, stop: () => (child.kill("SIGKILL"), once(child, "exit")) };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("redis-server did not listen in 5 s");
}

before(async () => {
  [redis, upstream, browser] = await Promise.all([startRedis(), startServer({ RUNFLOW_API_KEY: undefined }), launchBrowser()]);
  // Runflow: signs with the secret both instances know, delivers wherever callback_url says.
  scenario = await createScenario(upstream.url, { lifecycle_ms: [100, 100, 600], api_key: KEY, callback_secrets: [SECRET] });
  const portA = await freePort();
  // Both instances stand behind one public address, which routes Runflow's callbacks to A.
  const shared = {
    RUNFLOW_API_KEY: KEY,
    RUNFLOW_UPSTREAM: `${upstream.url}${scenario.base}`,
    RUNFLOW_CALLBACK_SECRETS: SECRET,
    PUBLIC_URL: `http://127.0.0.1:${portA}`,
    REDIS_URL: redis.url,
  };
  [a, b] = await Promise.all([startServer({ ...shared, PORT: String(portA) }), startServer(shared)]);
});

after(async () => {
  await browser?.close();
  await Promise.all([a?.stop(), b?.stop(), upstream?.stop()]);
  await redis?.stop();
});

test("a browser on instance B is pushed the run whose callback reached instance A", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${b.url}/api/runflow/_backend`);
    const result = await page.evaluate(async (image) => {
      const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
      await init();
      const ways = [];
      const client = new KontextClient({ baseUrl: "/api/runflow", pollIntervalMs: 50 });
      const run = await client.run({ prompt: "snow", image_url: image }, { onWaiting: (way) => ways.push(way.via) });
      return { id: run.id, status: run.status, callbackUrl: run.callback_url, ways };
    }, IMAGE);
    assert.equal(result.status, "succeeded", JSON.stringify(result));
    assert.deepEqual(result.ways, ["events"]);
    assert.equal(result.callbackUrl, `${a.url}/api/runflow/callbacks`);
    const log = await scenario.log();
    assert.equal(log.filter((entry) => entry.kind === "get" && entry.path.endsWith(`/runs/${result.id}`)).length, 1);
    // The callback went to A (the mock's delivery history), never to B.
    const attempts = (await (await fetch(`${upstream.url}${scenario.base}/callbacks`)).json()).attempts;
    const delivered = attempts.filter((attempt) => attempt.run_id === result.id);
    assert.ok(delivered.length >= 1, JSON.stringify(attempts));
    assert.ok(delivered.every((attempt) => attempt.url.startsWith(a.url)), JSON.stringify(delivered));
    assert.equal(delivered.at(-1).status, 200);
  } finally {
    await context.close();
  }
});
