// The server examples as users get them: the package packed with `npm pack` and installed from the
// tarball into examples/nextjs (built with `next build`, served by `next start`) and
// examples/node-proxy, each proxying to the dev server's mock, which accepts only the test's key.
// Chromium edits the bundled sample through the example's own /api/runflow; the mock's log shows the
// key arrived, and nothing the browser sent or received holds it. The Next.js app also receives
// signed callbacks.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { assertCallbackRoute } from "./callbacks.mjs";
import { freePort, ready, startProcess, stopProcess } from "./processes.mjs";
import { ROOT, createScenario, launchBrowser, openPage, startServer } from "../e2e/harness.mjs";

const run = promisify(execFile);
const npm = (cwd, ...args) => run("npm", [...args, "--no-audit", "--no-fund", "--loglevel=error"], { cwd, maxBuffer: 1 << 24 });
const seconds = (since) => `${((performance.now() - since) / 1000).toFixed(1)} s`;

const KEY = `rf_test_${randomBytes(12).toString("hex")}`;
const SECRETS = [`whsec_old_${randomBytes(8).toString("hex")}`, `whsec_new_${randomBytes(8).toString("hex")}`];

let work;
let devserver;
let browser;
const installed = {};
const children = new Set();

before(async () => {
  const started = performance.now();
  work = await mkdtemp(join(tmpdir(), "kontext-servers-"));
  const { stdout } = await npm(join(ROOT, "pkg"), "pack", "--json", "--pack-destination", work);
  const tarball = join(work, JSON.parse(stdout)[0].filename);
  // Both installs at once (the network is most of it), with the dev server and Chromium.
  let browserReady;
  [installed.nextjs, installed["node-proxy"], devserver, browserReady] = await Promise.all([
    example("nextjs", tarball),
    example("node-proxy", tarball),
    startServer(),
    launchBrowser(),
  ]);
  browser = browserReady;
  console.log(`# packed, both examples installed, dev server and Chromium up: ${seconds(started)}`);
});

after(async () => {
  await Promise.all([...children].map(stop));
  await browser?.close();
  await devserver?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function example(name, tarball) {
  const dir = join(work, name);
  await cp(join(ROOT, "examples", name), dir, { recursive: true, filter: (src) => !/node_modules|\.next/.test(src) });
  const started = performance.now();
  await npm(dir, "install", tarball);
  console.log(`# npm install (${name}): ${seconds(started)}`);
  return dir;
}

function start(command, args, options) {
  const child = startProcess(command, args, options);
  children.add(child);
  return child;
}

async function stop(child) {
  children.delete(child);
  await stopProcess(child);
}

/**
 * Opens `url`, clicks Edit, waits for the edited picture; asserts "succeeded", no page problem, and
 * that the key is in nothing the page sent or received.
 */
async function editInBrowser(url) {
  const { context, page, problems } = await openPage(browser);
  const seen = [];
  const record = async (read) => seen.push(...(await read().catch(() => [])));
  page.on("request", (request) => record(async () => [request.url(), JSON.stringify(await request.allHeaders()), request.postData() ?? ""]));
  page.on("response", (response) => record(async () => {
    const headers = JSON.stringify(await response.allHeaders());
    const textual = /json|text|javascript|html/.test(response.headers()["content-type"] ?? "");
    return [headers, textual ? await response.text() : ""];
  }));
  try {
    await page.goto(url);
    await page.waitForSelector("#edit:not([disabled])", { timeout: 15_000 });
    await page.click("#edit");
    await page.waitForFunction(() => {
      const img = document.getElementById("result");
      return img && !img.hidden && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 20_000 });
    assert.equal((await page.textContent("#status")).trim(), "succeeded");
    seen.push(await page.content());
    await page.waitForLoadState("networkidle");
    assert.deepEqual(problems, []);
    assert.ok(seen.some((s) => s.includes("/api/runflow/v1/models/")), "the create went through the example's proxy");
    assert.ok(!seen.some((s) => s.includes(KEY)), "the key reached the browser");
  } finally {
    await context.close();
  }
}

/** The mock saw one create, with the key it requires (201; any other key gets 401), and no 401. */
async function assertKeyAdded(mock) {
  const log = await mock.log();
  const creates = log.filter((entry) => entry.kind === "create");
  assert.equal(creates.length, 1, JSON.stringify(log));
  assert.equal(creates[0].status, 201);
  assert.equal(creates[0].headers.authorization, "Bearer [redacted]");
  assert.deepEqual(log.filter((entry) => entry.status === 401), []);
  assert.ok(log.some((entry) => entry.kind === "get"), "the run was followed through the proxy");
}

test("node-proxy: the server entry's types check, and lines that must not compile do not", async () => {
  // tsc fails if any line marked ts-expect-error in type-tests.ts compiles.
  await run(join(installed["node-proxy"], "node_modules/.bin/tsc"), ["--noEmit", "-p", installed["node-proxy"]]);
});

test("node-proxy: node:http + toNodeHandler(createProxy) serves the page, which edits through it with the key added", async () => {
  const started = performance.now();
  const mock = await createScenario(devserver.url, { api_key: KEY });
  const server = start(process.execPath, ["server.mjs"], {
    cwd: installed["node-proxy"],
    env: { RUNFLOW_API_KEY: KEY, RUNFLOW_UPSTREAM: `${devserver.url}${mock.base}`, PORT: "0", HOST: "127.0.0.1" },
  });
  try {
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`node-proxy did not listen in 10 s:\n${server.output}`)), 10_000);
      server.stdout.on("data", () => {
        const match = server.output.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      server.on("exit", (code) => reject(new Error(`node-proxy exited (${code}):\n${server.output}`)));
    });
    // A path the client never uses is refused by the proxy, not forwarded.
    const refused = await fetch(`${url}/api/runflow/v1/callback-secrets`, { method: "POST" });
    assert.equal(refused.status, 403);
    await editInBrowser(url);
    await assertKeyAdded(mock);
    assert.ok(!server.output.includes(KEY), "the key is in the server's log");
  } finally {
    await stop(server);
  }
  console.log(`# node-proxy test: ${seconds(started)}`);
});

// Next.js 16 builds with Turbopack by default; webpack (`--webpack`) is still supported. Both must
// take the browser build's .wasm as an asset and, with serverExternalPackages, leave the Node
// entries to Node.
for (const bundler of ["turbopack", "webpack"]) {
  test(`nextjs (${bundler}): next build, next start; the page edits through the route handler proxy, and callbacks are verified`, async () => {
    const dir = installed.nextjs;
    const next = join(dir, "node_modules/.bin/next");
    const env = { NEXT_TELEMETRY_DISABLED: "1" };
    let started = performance.now();
    // Built without the key or the upstream: they are read when the server runs, not baked in.
    await rm(join(dir, ".next"), { recursive: true, force: true });
    await run(next, ["build", `--${bundler}`], { cwd: dir, env: { ...process.env, ...env }, maxBuffer: 1 << 24 });
    console.log(`# next build --${bundler}: ${seconds(started)}`);

    started = performance.now();
    const mock = await createScenario(devserver.url, { api_key: KEY });
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const server = start(next, ["start", "-H", "127.0.0.1", "-p", String(port)], {
      cwd: dir,
      env: { ...env, RUNFLOW_API_KEY: KEY, RUNFLOW_UPSTREAM: `${devserver.url}${mock.base}`, RUNFLOW_CALLBACK_SECRETS: SECRETS.join(",") },
    });
    try {
      await ready(server, url);
      console.log(`# next start ready: ${seconds(started)}`);
      await editInBrowser(url);
      await assertKeyAdded(mock);
      await assertCallbacks(url, server, mock);
      assert.ok(!server.output.includes(KEY), "the key is in the server's log");
    } finally {
      await stop(server);
    }
    console.log(`# nextjs (${bundler}) after the build: ${seconds(started)}`);
  });
}

/**
 * Callbacks: signed by the newer of two secrets (a rotation) → 200, logged once; one byte changed
 * or another secret → 401; signed but not a callback → 400.
 */
async function assertCallbacks(url, server, mock) {
  const [run] = (await (await fetch(`${devserver.url}${mock.base}/runs`)).json()).items;
  await assertCallbackRoute(`${url}/api/runflow/callbacks`, run, SECRETS[1], "req_cb_1");
  // The route logged the delivery it accepted, once.
  await new Promise((r) => setTimeout(r, 100));
  const logged = server.output.match(/runflow callback (.+)/g) ?? [];
  assert.equal(logged.length, 1, server.output);
  assert.match(logged[0], new RegExp(`"runId":"${run.id}"`));
  assert.match(logged[0], /"event":"run\.completed"/);
  assert.match(logged[0], /"requestId":"req_cb_1"/);
}
