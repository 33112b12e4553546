// The Workers example as users get it: the package packed with `npm pack` and installed from the
// tarball into examples/workers with wrangler (which brings workerd as an npm package), served by
// `wrangler dev --local` on 127.0.0.1, proxying to the dev server's mock, which accepts only the
// test's key. From Node: health through the Worker, a run created and followed to "succeeded" by
// the package's own Node client, a refused path, signed and tampered callbacks.
//
// Fully local: no login, no account; metrics, error reports, the update check (the banner's) and
// the `Request.cf` download are turned off, so nothing but 127.0.0.1 is called.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cp, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";
import { assertCallbackRoute } from "./callbacks.mjs";
import { freePort, ready, startProcess, stopProcess } from "./processes.mjs";
import { promisify } from "node:util";
import { ROOT, createScenario, startServer } from "../e2e/harness.mjs";

const run = promisify(execFile);
const npm = (cwd, ...args) => run("npm", [...args, "--no-audit", "--no-fund", "--loglevel=error"], { cwd, maxBuffer: 1 << 24 });
const seconds = (since) => `${((performance.now() - since) / 1000).toFixed(1)} s`;

const KEY = `rf_test_${randomBytes(12).toString("hex")}`;
const SECRETS = [`whsec_old_${randomBytes(8).toString("hex")}`, `whsec_new_${randomBytes(8).toString("hex")}`];
const IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

let work;
let dir;
let devserver;

before(async () => {
  const started = performance.now();
  work = await mkdtemp(join(tmpdir(), "kontext-workers-"));
  const { stdout } = await npm(join(ROOT, "pkg"), "pack", "--json", "--pack-destination", work);
  const tarball = join(work, JSON.parse(stdout)[0].filename);
  dir = join(work, "workers");
  await cp(join(ROOT, "examples", "workers"), dir, { recursive: true, filter: (src) => !/node_modules|\.wrangler|\.dev\.vars/.test(src) });
  [, devserver] = await Promise.all([npm(dir, "install", tarball), startServer()]);
  console.log(`# packed, examples/workers installed (wrangler, workerd), dev server up: ${seconds(started)}`);
});

after(async () => {
  await devserver?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** `wrangler dev --local` in its own process group (wrangler spawns workerd), output kept. */
async function wranglerDev(vars) {
  // Secrets as in local development: .dev.vars, so the key is on no command line.
  await writeFile(join(dir, ".dev.vars"), Object.entries(vars.secrets).map(([k, v]) => `${k}=${v}\n`).join(""));
  const [port, inspector] = [await freePort(), await freePort()];
  const home = join(work, "home");
  await mkdir(home, { recursive: true });
  const args = [
    "dev", "--local", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(inspector),
    "--persist-to", join(work, "state"), "--show-interactive-dev-session=false", "--log-level", "log",
    ...Object.entries(vars.plain).flatMap(([k, v]) => ["--var", `${k}:${v}`]),
  ];
  const child = startProcess(join(dir, "node_modules/.bin/wrangler"), args, {
    cwd: dir,
    env: {
      WRANGLER_SEND_METRICS: "false",
      WRANGLER_SEND_ERROR_REPORTS: "false",
      WRANGLER_HIDE_BANNER: "true", // the banner is what runs the update check
      CLOUDFLARE_CF_FETCH_ENABLED: "false", // miniflare's placeholder instead of downloading Request.cf
      XDG_CONFIG_HOME: home, // wrangler's logs and dev registry, not in ~/.config
    },
  });
  child.url = `http://127.0.0.1:${port}`;
  return child;
}

test("workers: wrangler dev --local serves createProxy and receiveCallback from the package's workerd entry", async () => {
  let started = performance.now();
  const mock = await createScenario(devserver.url, { api_key: KEY });
  const worker = await wranglerDev({
    plain: { RUNFLOW_UPSTREAM: `${devserver.url}${mock.base}` },
    secrets: { RUNFLOW_API_KEY: KEY, RUNFLOW_CALLBACK_SECRETS: SECRETS.join(",") },
  });
  try {
    const api = `${worker.url}/api/runflow`;
    // Health through the Worker (the first 200 is the readiness check itself).
    const health = await ready(worker, `${api}/v1/health`);
    assert.deepEqual(await health.json(), { status: "ok" });
    console.log(`# wrangler dev ready: ${seconds(started)}`);
    started = performance.now();

    // A run through the Worker with the package's Node client, which holds no key.
    const require = createRequire(join(dir, "package.json"));
    const { KontextClient } = await import(pathToFileURL(require.resolve("runflow-kontext")).href);
    const client = new KontextClient({ baseUrl: api, pollIntervalMs: 20 });
    const statuses = [];
    const done = await client.run({ prompt: "make it snow", image_url: IMAGE }, { onStatus: (r) => statuses.push(r.status) });
    assert.equal(done.status, "succeeded");
    assert.equal(statuses.at(-1), "succeeded");
    assert.ok(done.output.outputs.length >= 1);

    // The mock accepted the key the Worker added (any other gets 401) and saw the run followed.
    const log = await mock.log();
    const creates = log.filter((entry) => entry.kind === "create");
    assert.equal(creates.length, 1, JSON.stringify(log));
    assert.equal(creates[0].status, 201);
    assert.equal(creates[0].headers.authorization, "Bearer [redacted]");
    assert.deepEqual(log.filter((entry) => entry.status === 401), []);
    assert.ok(log.some((entry) => entry.kind === "get"));

    // A path the client never uses is refused by the proxy, not forwarded.
    const before = log.length;
    const refused = await fetch(`${api}/v1/callback-secrets`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    assert.equal(refused.status, 403);
    assert.equal((await refused.json()).code, "path_not_allowed");
    assert.equal((await mock.log()).length, before, "the refused call reached the mock");
    assert.equal((await fetch(`${worker.url}/elsewhere`)).status, 404);

    // Callbacks: signed by the newer of two secrets → 200; a byte changed → 401; another secret → 401;
    // signed but not a callback → 400; not a POST → 405.
    const [mockRun] = (await (await fetch(`${devserver.url}${mock.base}/runs`)).json()).items;
    assert.equal(mockRun.id, done.id);
    await assertCallbackRoute(`${api}/callbacks`, mockRun, SECRETS[1], "req_cb_w");
    assert.equal((await fetch(`${api}/callbacks`)).status, 405);

    // The Worker logged the delivery it accepted, once, and the proxy's lines; never the key.
    await new Promise((r) => setTimeout(r, 300));
    const logged = worker.output.match(/runflow callback (.+)/g) ?? [];
    assert.equal(logged.length, 1, worker.output);
    assert.match(logged[0], new RegExp(`"runId":"${done.id}"`));
    assert.match(logged[0], /"requestId":"req_cb_w"/);
    assert.match(worker.output, /"outcome":"refused","reason":"path_not_allowed"/);
    assert.ok(!worker.output.includes(KEY), "the key is in wrangler's output");
    assert.doesNotMatch(worker.output, /Request\.cf|update available/, "wrangler reached for the network");
  } finally {
    await stopProcess(worker);
  }
  console.log(`# workers test after wrangler was ready: ${seconds(started)}`);
});
