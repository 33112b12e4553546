// Many runs, watching, and the run store (issue 14), in headless Chromium through the package's
// browser entry (pkg/index.js): runMany's concurrency bound and order, its shared backoff under
// 429s with no duplicate run, stopOnError; watch's statuses to the end; the store's snapshots.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createScenario, encodePng, launchBrowser, startServer } from "./harness.mjs";

const IMAGE = `data:image/png;base64,${encodePng(8, 8, (x, y) => [x * 30, y * 30, 90]).toString("base64")}`;

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Runs `body(client)` in a page of the server's origin, the client on `base`. */
async function inPage(base, body, arg) {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`${server.url}/api/runflow/_backend`);
    return await page.evaluate(
      async ({ base, image, source, arg }) => {
        const { default: init, KontextClient } = await import("/pkg/index.js");
        await init();
        const client = new KontextClient({ baseUrl: base, pollIntervalMs: 50, retryBaseMs: 200 });
        return new Function("client", "image", "arg", `return (${source})(client, image, arg);`)(client, image, arg);
      },
      { base, image: IMAGE, source: body.toString(), arg },
    );
  } finally {
    await context.close();
  }
}

/**
 * The most runs in flight at once: each run from its first create attempt to its last GET, in
 * the mock's log (`runs` maps each run's client_ref to its id).
 */
function maxInFlight(log, runs) {
  const idOf = new Map(runs.map((run) => [run.client_ref, run.id]));
  const spans = new Map();
  for (const entry of log) {
    const id = entry.kind === "create" ? idOf.get(entry.body?.client_ref) : entry.path.match(/\/runs\/([^/?]+)$/)?.[1];
    if (!id) continue;
    const span = spans.get(id) ?? { from: Infinity, to: 0 };
    span.from = Math.min(span.from, entry.at_ms);
    span.to = Math.max(span.to, entry.at_ms);
    spans.set(id, span);
  }
  const points = [...spans.values()].flatMap(({ from, to }) => [[from, 1], [to, -1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, step] of points) most = Math.max(most, (open += step));
  return most;
}

test("runMany: 50 runs at concurrency 4, in input order, never more than 4 in flight, through 429s with no duplicate", async () => {
  const scenario = await createScenario(server.url, {
    lifecycle_ms: [20, 20, 150],
    faults: [
      { on: "create", skip: 6, times: 2, action: { type: "error", status: 429, retry_after: "1" } },
      { on: "get", skip: 40, times: 1, action: { type: "error", status: 429, retry_after: "1" } },
    ],
  });
  const outcome = await inPage(
    scenario.base,
    async (client, image) => {
      const inputs = Array.from({ length: 50 }, (_, n) => ({ prompt: `edit ${n}`, image_url: image }));
      const progress = [];
      const started = Date.now();
      const results = await client.runMany(inputs, { concurrency: 4, onProgress: ({ index, done }) => progress.push([index, done]) });
      return {
        ms: Date.now() - started,
        ok: results.map((r) => r.ok),
        prompts: results.map((r) => r.run?.input?.prompt),
        progress,
      };
    },
  );
  assert.deepEqual(outcome.ok, Array(50).fill(true));
  assert.deepEqual(outcome.prompts, Array.from({ length: 50 }, (_, n) => `edit ${n}`), "results in input order");
  assert.equal(outcome.progress.length, 50);
  assert.equal(outcome.progress.at(-1)[1], 50);
  const log = await scenario.log();
  const created = log.filter((entry) => entry.kind === "create" && entry.status === 201);
  assert.equal(created.length, 50, "one run per input: no duplicate");
  assert.equal(new Set(created.map((entry) => entry.body.client_ref)).size, 50);
  assert.equal(log.filter((entry) => entry.status === 429).length, 3);
  const runs = (await (await fetch(`${server.url}${scenario.base}/runs`)).json()).items;
  assert.equal(runs.length, 50);
  const most = maxInFlight(log, runs);
  assert.ok(most <= 4, `${most} runs in flight at once`);
  // The 429s' Retry-After (1 s) was waited out by the whole batch, not by one run alone.
  const after429 = log.find((entry) => entry.status === 429).at_ms;
  const during = log.filter((entry) => entry.at_ms > after429 + 50 && entry.at_ms < after429 + 900);
  assert.deepEqual(during.map((entry) => entry.kind), [], "nothing was sent during the shared backoff");
});

test("runMany: one failure does not stop the rest, unless stopOnError; bad concurrency is refused", async () => {
  const scenario = await createScenario(server.url, {
    lifecycle_ms: [20, 20, 100],
    faults: [{ on: "create", skip: 1, times: 1, action: { type: "error", status: 400, code: "BAD_REQUEST", message: "no" } }],
  });
  const outcome = await inPage(scenario.base, async (client, image) => {
    const inputs = Array.from({ length: 4 }, (_, n) => ({ prompt: `p${n}`, image_url: image }));
    const all = await client.runMany(inputs, { concurrency: 1 });
    const bad = await client.runMany(inputs, { concurrency: 0 }).catch((e) => ({ code: e.code, field: e.field }));
    return { all: all.map((r) => (r.ok ? "ok" : r.error.code)), bad };
  });
  assert.deepEqual(outcome.all, ["ok", "validation_error", "ok", "ok"]);
  assert.deepEqual(outcome.bad, { code: "validation_error", field: "concurrency" });
  const second = await createScenario(server.url, {
    lifecycle_ms: [20, 20, 100],
    faults: [{ on: "create", skip: 1, times: 1, action: { type: "error", status: 400, code: "BAD_REQUEST", message: "no" } }],
  });
  const stopped = await inPage(second.base, async (client, image) => {
    const inputs = Array.from({ length: 4 }, (_, n) => ({ prompt: `p${n}`, image_url: image }));
    const results = await client.runMany(inputs, { concurrency: 1, stopOnError: true });
    return results.map((r) => (r.ok ? "ok" : r.error.code));
  });
  assert.deepEqual(stopped, ["ok", "validation_error", "aborted", "aborted"]);
  assert.equal((await second.log()).filter((entry) => entry.kind === "create").length, 2, "nothing was created after the failure");
});

test("watch yields every status change and ends at the terminal state; leaving early stops it", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [300, 300, 300] });
  const outcome = await inPage(scenario.base, async (client, image) => {
    const { id } = await client.createRun({ prompt: "watch me", image_url: image });
    const seen = [];
    for await (const run of client.watch(id)) seen.push(run.status);
    const early = [];
    const other = await client.createRun({ prompt: "leave early", image_url: image });
    for await (const run of client.watch(other.id)) {
      early.push(run.status);
      break;
    }
    return { seen, early };
  });
  assert.deepEqual(outcome.seen, ["queued", "dispatching", "running", "succeeded"]);
  assert.deepEqual(outcome.early, ["queued"]);
});

test("the run store: snapshots from starting to succeeded, cancel stops, reset goes idle", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 200] });
  const slow = await createScenario(server.url, { lifecycle_ms: [100, 100, 30000] });
  const outcome = await inPage(
    scenario.base,
    async (client, image, slowBase) => {
      const { KontextClient } = await import("/pkg/index.js");
      const store = client.createRunStore();
      const statuses = [];
      const first = store.getSnapshot();
      const unsubscribe = store.subscribe(() => statuses.push(store.getSnapshot().status));
      const run = await store.start({ prompt: "store", image_url: image });
      const done = store.getSnapshot();
      const same = store.getSnapshot() === done;
      const slowStore = new KontextClient({ baseUrl: slowBase, pollIntervalMs: 50 }).createRunStore();
      const pending = slowStore.start({ prompt: "slow", image_url: image }).catch((e) => e.code);
      await new Promise((resolve) => setTimeout(resolve, 400));
      slowStore.cancel();
      const cancelled = await pending;
      const stopped = slowStore.getSnapshot().status;
      slowStore.reset();
      unsubscribe();
      return {
        first: first.status,
        statuses,
        done: { status: done.status, id: done.run?.id === run.id, error: done.error },
        same,
        cancelled,
        stopped,
        reset: slowStore.getSnapshot().status,
        frozen: Object.isFrozen(done),
      };
    },
    slow.base,
  );
  assert.equal(outcome.first, "idle");
  assert.deepEqual([...new Set(outcome.statuses)], ["starting", "queued", "dispatching", "running", "succeeded"]);
  assert.deepEqual(outcome.done, { status: "succeeded", id: true, error: undefined });
  assert.equal(outcome.same, true, "the snapshot is the same object until something changes");
  assert.equal(outcome.frozen, true);
  assert.equal(outcome.cancelled, "aborted");
  assert.equal(outcome.stopped, "stopped");
  assert.equal(outcome.reset, "idle");
});

test("the run store: a run that fails ends with its own status, its error beside it", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [20, 20, 100], final_status: "failed" });
  const outcome = await inPage(scenario.base, async (client, image) => {
    const store = client.createRunStore();
    const code = await store.start({ prompt: "fails", image_url: image }).catch((error) => error.code);
    const { status, error, run } = store.getSnapshot();
    return { code, status, error: error?.code, run: run?.status };
  });
  assert.deepEqual(outcome, { code: "run_failed", status: "failed", error: "run_failed", run: "failed" });
});

test("a signal look-alike given to call after call keeps no listener of each once they end", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [20, 20, 60] });
  const outcome = await inPage(scenario.base, async (client, image) => {
    // AbortSignal.any takes only real AbortSignals: a look-alike (which the wasm accepts) is
    // linked by hand, and must be unlinked when each call ends.
    class LookAlike extends EventTarget {
      aborted = false;
      listening = 0;
      addEventListener(...args) {
        this.listening += 1;
        super.addEventListener(...args);
      }
      removeEventListener(...args) {
        this.listening -= 1;
        super.removeEventListener(...args);
      }
    }
    const signal = new LookAlike();
    const input = { prompt: "linked", image_url: image };
    const [first] = await client.runMany([input, input], { signal });
    const store = client.createRunStore();
    await store.start(input, { signal });
    await store.start(input, { signal });
    const statuses = [];
    for await (const run of client.watch(first.run.id, { signal })) statuses.push(run.status);
    return { listening: signal.listening, statuses, last: store.getSnapshot().status };
  });
  assert.deepEqual(outcome, { listening: 0, statuses: ["succeeded"], last: "succeeded" });
});
