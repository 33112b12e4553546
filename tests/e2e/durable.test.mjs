// Waiting that survives tabs and reloads (issue 14), in headless Chromium through the package's
// browser entry (pkg/index.js) against the mock: two pages on one run make one stream of GETs
// (the mock's log), a follower takes over when the leader's page closes, a reload mid-run
// resumes the run to its end (IndexedDB and localStorage), an upload is reused after a reload,
// a follower's abort, deadline and bad options behave as a poller's, a follower shown again or
// back online looks itself, and a refused lock manager or an IndexedDB that never opens costs
// no run.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createScenario, encodePng, launchBrowser, openUnemulatedPage, startServer } from "./harness.mjs";

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

/** A page of the server's origin in `context` with `window.client` on `base`, and `window.seen`. */
async function clientPage(context, base, options = {}) {
  const page = await context.newPage();
  await page.goto(`${server.url}/api/runflow/_backend`);
  await page.evaluate(
    async ({ base, options }) => {
      const { default: init, KontextClient } = await import("/pkg/index.js");
      await init();
      window.client = new KontextClient({ baseUrl: base, ...options });
      window.seen = { statuses: [], waiting: [] };
      window.follow = (id, extra = {}) =>
        client.waitForRun(id, {
          pollIntervalMs: 200,
          onStatus: (run) => seen.statuses.push(run.status),
          onWaiting: (waiting) => seen.waiting.push(waiting.via),
          ...extra,
        });
    },
    { base, options },
  );
  return page;
}

const runGets = async (scenario, id) =>
  (await scenario.log()).filter((entry) => entry.kind === "get" && entry.path.endsWith(`/runs/${id}`));

/** Resolves once `check()` is true (polled every 50 ms), failing after 10 s: no fixed sleep to outrun. */
async function until(check, what) {
  const giveUp = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > giveUp) throw new Error(`still not so after 10 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Two pages of `context` on `base` and a run created in the first, which follows it (with
 * `extra`, as `follow` takes it) and has seen its first status, so holds the run's lock.
 */
async function leaderAndFollower(context, base, extra = {}) {
  const leader = await clientPage(context, base);
  const follower = await clientPage(context, base);
  const id = await create(leader);
  await leader.evaluate(({ id, extra }) => void follow(id, extra).catch(() => {}), { id, extra });
  await leader.waitForFunction(() => seen.statuses.length > 0);
  return { leader, follower, id };
}

const create = (page) => page.evaluate(async (image) => (await client.createRun({ prompt: "shared", image_url: image })).id, IMAGE);

test("two pages waiting on one run make one stream of GETs, and both hear every status and the result", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 2500] });
  const context = await browser.newContext();
  try {
    const solo = await clientPage(context, scenario.base);
    const alone = await create(solo);
    assert.equal(await solo.evaluate((id) => follow(id).then((run) => run.status), alone), "succeeded");
    const baseline = (await runGets(scenario, alone)).length;
    await solo.close();

    const [first, second] = [await clientPage(context, scenario.base), await clientPage(context, scenario.base)];
    const id = await create(first);
    await first.evaluate((id) => void (window.done = follow(id).then((run) => run.status)), id);
    // The first page holds the run's lock once it has seen a status.
    await first.waitForFunction(() => seen.statuses.length > 0);
    await second.evaluate((id) => void (window.done = follow(id).then((run) => run.status)), id);
    assert.equal(await first.evaluate(() => done), "succeeded");
    assert.equal(await second.evaluate(() => done), "succeeded");
    const shared = (await runGets(scenario, id)).length;
    assert.ok(shared <= baseline + 1, `two pages made ${shared} GETs, one page alone ${baseline}`);
    const [one, two] = [await first.evaluate(() => seen), await second.evaluate(() => seen)];
    assert.deepEqual(two.waiting, ["tab"], "the second page is told another tab follows the run");
    assert.equal(one.statuses.at(-1), "succeeded");
    assert.equal(two.statuses.at(-1), "succeeded");
    assert.ok(two.statuses.length >= 2, `the follower heard the run change: ${two.statuses}`);
    assert.deepEqual(two.statuses, [...new Set(two.statuses)], "each status once");
  } finally {
    await context.close();
  }
});

test("when the page that follows a run closes, a waiting page takes over and finishes it", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 2500] });
  const context = await browser.newContext();
  try {
    const { leader, follower, id } = await leaderAndFollower(context, scenario.base);
    await follower.evaluate((id) => void (window.done = follow(id).then((run) => run.status)), id);
    await follower.waitForFunction(() => seen.statuses.includes("running"));
    const before = (await runGets(scenario, id)).length;
    await leader.close();
    assert.equal(await follower.evaluate(() => done), "succeeded");
    assert.ok((await runGets(scenario, id)).length > before, "the follower polled once the leader was gone");
    assert.deepEqual(await follower.evaluate(() => seen.waiting), ["tab", "poll"], "a follower, then a poller");
  } finally {
    await context.close();
  }
});

for (const persist of [true, "localStorage"]) {
  test(`a reload mid-run resumes the run to its end (persist: ${JSON.stringify(persist)}), and a delivered run is not resumed`, async () => {
    const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 2000] });
    const context = await browser.newContext();
    try {
      const page = await clientPage(context, scenario.base, { persist, pollIntervalMs: 100 });
      await page.evaluate(async (image) => {
        await client.run({ prompt: "kept", image_url: image });
        window.started = client.run({ prompt: "reloaded", image_url: image }, { onStatus: (run) => (window.midway = run) });
      }, IMAGE);
      await page.waitForFunction(() => window.midway?.status === "running");
      const id = await page.evaluate(() => midway.id);
      await page.reload();
      await page.evaluate(
        async ({ base, persist }) => {
          const { default: init, KontextClient } = await import("/pkg/index.js");
          await init();
          window.client = new KontextClient({ baseUrl: base, persist, pollIntervalMs: 100 });
        },
        { base: scenario.base, persist },
      );
      const resumed = await page.evaluate(async () => {
        const runs = await client.resumeRuns();
        const statuses = [];
        const ends = await Promise.all(runs.map((run) => run.wait({ onStatus: (r) => statuses.push(r.status) })));
        return { ids: runs.map((run) => run.id), since: runs[0]?.since, ends: ends.map((run) => run.status), statuses, after: (await client.resumeRuns()).length };
      });
      assert.deepEqual(resumed.ids, [id], "only the unfinished run comes back");
      assert.ok(resumed.since > Date.now() - 60_000);
      assert.deepEqual(resumed.ends, ["succeeded"]);
      assert.equal(resumed.statuses.at(-1), "succeeded");
      assert.equal(resumed.after, 0, "a delivered run is forgotten");
      assert.equal(await scenario.count("create"), 2, "nothing created again");
    } finally {
      await context.close();
    }
  });
}

test("with persist, an image uploaded before a reload is not uploaded again", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [20, 20, 60] });
  const context = await browser.newContext();
  try {
    const upload = (page) =>
      page.evaluate(async () => {
        const canvas = new OffscreenCanvas(24, 16);
        const context = canvas.getContext("2d");
        context.fillStyle = "rgb(40, 120, 200)";
        context.fillRect(0, 0, 24, 16);
        const url = await client.uploadImage(await canvas.convertToBlob({ type: "image/png" }));
        // The upload does not wait for its write to IndexedDB: wait for the record here.
        const stored = () =>
          new Promise((resolve) => {
            const open = indexedDB.open("runflow-kontext");
            open.onsuccess = () => {
              const count = open.result.transaction("uploads").objectStore("uploads").count();
              count.onsuccess = () => (open.result.close(), resolve(count.result));
            };
          });
        while (!(await stored())) await new Promise((resolve) => setTimeout(resolve, 20));
        return url;
      });
    const page = await clientPage(context, scenario.base, { persist: true, uploadThreshold: 0 });
    const first = await upload(page);
    await page.close();
    const again = await upload(await clientPage(context, scenario.base, { persist: true, uploadThreshold: 0 }));
    assert.equal(again, first);
    assert.equal(await scenario.count("upload_create"), 1, "one upload across the reload");
    const fresh = await browser.newContext();
    try {
      await upload(await clientPage(fresh, scenario.base, { persist: true, uploadThreshold: 0 }));
      assert.equal(await scenario.count("upload_create"), 2, "another browser profile uploads its own");
    } finally {
      await fresh.close();
    }
  } finally {
    await context.close();
  }
});

test("a follower's abort, deadline and bad options are a poller's; a run that does not exist is forgotten", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 60000] });
  const context = await browser.newContext();
  try {
    const leader = await clientPage(context, scenario.base, { persist: true });
    const follower = await clientPage(context, scenario.base, { persist: true });
    const id = await create(leader);
    await leader.evaluate((id) => void follow(id, { signal: (window.stop = new AbortController()).signal }).catch(() => {}), id);
    await leader.waitForFunction(() => seen.statuses.length > 0);
    const outcomes = await follower.evaluate(async (id) => {
      const stop = new AbortController();
      const aborted = follow(id, { signal: stop.signal }).catch((error) => error);
      setTimeout(() => stop.abort(), 100);
      const timedOut = follow(id, { timeoutMs: 300 }).catch((error) => error);
      // null is no timeout given, as the wasm reads it: this one is still waiting at the end.
      let untimed = "waiting";
      follow(id, { timeoutMs: null, signal: stop.signal }).catch((error) => (untimed = error.code));
      const fields = (error) => ({ name: error.name, code: error.code, runId: error.runId, message: error.message });
      const bad = await follow(id, { timeoutMs: -5 }).catch((error) => error);
      const notSignal = await follow(id, { signal: { aborted: false } }).catch((error) => ({ code: error.code, field: error.field }));
      const timedOutFields = fields(await timedOut);
      // A signal that fires while the call is still checking its options (before it listens).
      const early = new AbortController();
      const racing = follow(id, { signal: early.signal }).catch((error) => error.code);
      early.abort();
      return { aborted: fields(await aborted), timedOut: timedOutFields, bad: { code: bad.code, field: bad.field }, notSignal, untimed, early: await racing, waiting: seen.waiting };
    }, id);
    assert.equal(outcomes.aborted.code, "aborted");
    assert.equal(outcomes.aborted.runId, id);
    assert.match(outcomes.aborted.message, /AbortSignal/);
    assert.equal(outcomes.timedOut.code, "timeout");
    assert.equal(outcomes.timedOut.runId, id);
    assert.match(outcomes.timedOut.message, /300 ms/);
    assert.deepEqual(outcomes.bad, { code: "validation_error", field: "timeoutMs" });
    assert.deepEqual(outcomes.notSignal, { code: "validation_error", field: "signal" }, "a signal without addEventListener");
    assert.equal(outcomes.untimed, "aborted", "timeoutMs: null waited until its signal fired");
    assert.equal(outcomes.early, "aborted");
    assert.deepEqual(outcomes.waiting, ["tab", "tab", "tab"], "the good calls followed the leader");
    await leader.evaluate(() => stop.abort());
    // The followers withdrew their lock requests when they ended: nobody takes the run over.
    const getsBefore = (await runGets(scenario, id)).length;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal((await runGets(scenario, id)).length, getsBefore, "no GET after every wait ended");

    const missing = await follower.evaluate(async () => {
      const error = await client.waitForRun("00000000-0000-4000-8000-000000000000").catch((error) => error.code);
      return { error, kept: (await client.resumeRuns()).map((run) => run.id) };
    });
    assert.equal(missing.error, "not_found");
    assert.deepEqual(missing.kept, [id], "the missing run is forgotten; the aborted wait's run is kept to resume");
    assert.deepEqual(await follower.evaluate(async () => {
      await (await client.resumeRuns())[0].forget();
      return (await client.resumeRuns()).length;
    }), 0, "forget() drops a record");
  } finally {
    await context.close();
  }
});

test("a run() in one page leads; watch() in another hears every status to the end, with no GETs of its own", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [300, 300, 1500] });
  const context = await browser.newContext();
  try {
    const creator = await clientPage(context, scenario.base);
    const watcher = await clientPage(context, scenario.base);
    await creator.evaluate((image) => {
      window.created = new Promise((resolve) => {
        window.done = client.run({ prompt: "led by run()", image_url: image }, { pollIntervalMs: 200, onStatus: (run) => resolve(run.id) }).then((run) => run.status);
      });
    }, IMAGE);
    const id = await creator.evaluate(() => created);
    // run() asks for the run's lock as soon as the run exists; the grant is asynchronous, and a
    // watcher that asked first would follow the run itself (one seen failure on a loaded machine).
    await creator.waitForFunction(async (id) => (await navigator.locks.query()).held.some((lock) => lock.name.endsWith(id)), id);
    const watched = await watcher.evaluate(async (id) => {
      const statuses = [];
      for await (const run of client.watch(id, { onWaiting: (waiting) => seen.waiting.push(waiting.via) })) statuses.push(run.status);
      return { statuses, waiting: seen.waiting };
    }, id);
    assert.equal(await creator.evaluate(() => done), "succeeded");
    assert.deepEqual(watched.waiting, ["tab"]);
    assert.equal(watched.statuses.at(-1), "succeeded");
    assert.ok(watched.statuses.includes("running"), `the watcher heard the run go on: ${watched.statuses}`);
    const gets = await runGets(scenario, id);
    // One poller at 200 ms growing to 0.8 s over about 2.1 s: a second one would double this.
    assert.ok(gets.length <= 9, `${gets.length} GETs for one run`);
  } finally {
    await context.close();
  }
});

test("a follower shown again looks once itself, while the tab that follows the run sleeps", async () => {
  // Windows that can really be hidden: Playwright's own pages are always visible.
  const { browser: unemulated, context, page: leader, close } = await openUnemulatedPage();
  try {
    const scenario = await createScenario(server.url, { lifecycle_ms: [50, 50, 60000] });
    const url = `${server.url}/api/runflow/_backend`;
    await leader.goto(url);
    // The follower in a window of its own, so that hiding it leaves the leader visible.
    const opened = context.waitForEvent("page");
    await (await unemulated.newBrowserCDPSession()).send("Target.createTarget", { url, newWindow: true });
    const follower = await opened;
    await follower.waitForLoadState();
    for (const page of [leader, follower]) {
      await page.evaluate(async (base) => {
        const { default: init, KontextClient } = await import("/pkg/index.js");
        await init();
        window.client = new KontextClient({ baseUrl: base });
        window.ways = [];
        window.statuses = [];
      }, scenario.base);
    }
    const id = await create(leader);
    const waitOptions = "{ pollIntervalMs: 20000, onStatus: (run) => statuses.push(run.status), onWaiting: (way) => ways.push(way.via) }";
    const follow = (page) => page.evaluate(`void client.waitForRun(${JSON.stringify(id)}, ${waitOptions}).catch(() => {})`);
    await follow(leader);
    await leader.waitForFunction(() => statuses.length > 0);
    await follow(follower);
    await follower.waitForFunction(() => ways.length > 0);
    const gets = async () => (await runGets(scenario, id)).length;
    const settle = () => new Promise((resolve) => setTimeout(resolve, 600));
    await settle();
    assert.deepEqual(await follower.evaluate(() => ways), ["tab"]);
    assert.equal(await gets(), 1, "the leader's first check; its next is 20 s away");
    const cdp = await context.newCDPSession(follower);
    const { windowId } = await cdp.send("Browser.getWindowForTarget");
    await cdp.send("Browser.setWindowBounds", { windowId, bounds: { windowState: "minimized" } });
    await follower.waitForFunction(() => document.visibilityState === "hidden");
    await settle();
    assert.equal(await gets(), 1, "nothing while the follower is hidden");
    await cdp.send("Browser.setWindowBounds", { windowId, bounds: { windowState: "normal" } });
    await follower.waitForFunction(() => document.visibilityState === "visible");
    await until(async () => (await gets()) >= 2, "the follower looks when shown again");
    await settle();
    assert.equal(await leader.evaluate(() => document.visibilityState), "visible", "the leader's window was never hidden");
    assert.equal(await gets(), 2, "the follower looked once when shown again");
  } finally {
    await close();
  }
});

test("a follower whose network returns looks once itself, while the tab that follows the run sleeps", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [50, 50, 60000] });
  const context = await browser.newContext();
  try {
    const { leader, follower, id } = await leaderAndFollower(context, scenario.base, { pollIntervalMs: 20000 });
    await follower.evaluate((id) => void follow(id, { pollIntervalMs: 20000 }).catch(() => {}), id);
    await follower.waitForFunction(() => seen.waiting.length > 0);
    const gets = async () => (await runGets(scenario, id)).length;
    const settle = () => new Promise((resolve) => setTimeout(resolve, 600));
    await settle();
    assert.deepEqual(await follower.evaluate(() => seen.waiting), ["tab"]);
    assert.equal(await gets(), 1, "the leader's first check; its next is 20 s away");
    // The follower's page alone goes offline and back (the DevTools protocol, on its target).
    const cdp = await context.newCDPSession(follower);
    const network = (offline) => cdp.send("Network.emulateNetworkConditions", { offline, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await network(true);
    await follower.waitForFunction(() => !navigator.onLine);
    await settle();
    assert.equal(await gets(), 1, "nothing while the follower is offline");
    await network(false);
    await follower.waitForFunction(() => navigator.onLine);
    await until(async () => (await gets()) >= 2, "the follower looks when back online");
    await settle();
    assert.equal(await leader.evaluate(() => navigator.onLine), true, "the leader never went offline");
    assert.equal(await gets(), 2, "the follower looked once when back online");
  } finally {
    await context.close();
  }
});

test("a follower that takes a run over keeps its own deadline: the timeout names the timeoutMs it was given", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [50, 50, 60000] });
  const context = await browser.newContext();
  try {
    const { leader, follower, id } = await leaderAndFollower(context, scenario.base);
    await follower.evaluate(
      (id) =>
        void (window.done = follow(id, { timeoutMs: 6000 }).catch((error) => ({ code: error.code, runId: error.runId, message: error.message }))),
      id,
    );
    await follower.waitForFunction(() => seen.waiting.includes("tab"));
    await new Promise((resolve) => setTimeout(resolve, 800));
    await leader.close();
    const error = await follower.evaluate(() => done);
    assert.deepEqual(await follower.evaluate(() => seen.waiting), ["tab", "poll"], "it took the run over");
    assert.equal(error.code, "timeout");
    assert.equal(error.runId, id);
    assert.match(error.message, /overall timeout of 6000 ms/);
    const getsAtEnd = (await runGets(scenario, id)).length;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal((await runGets(scenario, id)).length, getsAtEnd, "no GET after the timeout");
  } finally {
    await context.close();
  }
});

test("where the lock manager refuses (an opaque origin's SecurityError), each call follows its run itself, and a storage writes without it", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 3000] });
  const context = await browser.newContext();
  // What navigator.locks does in a sandboxed iframe without allow-same-origin.
  await context.addInitScript(() => {
    LockManager.prototype.request = () => Promise.reject(new DOMException("Access to the Locks API is denied in this context.", "SecurityError"));
  });
  try {
    const pages = [await clientPage(context, scenario.base), await clientPage(context, scenario.base)];
    const id = await create(pages[0]);
    const waits = await Promise.all(pages.map((page) => page.evaluate((id) => follow(id).then((run) => ({ status: run.status, waiting: seen.waiting })), id)));
    for (const wait of waits) assert.deepEqual(wait, { status: "succeeded", waiting: ["poll"] });
    assert.equal(await pages[0].evaluate(async (image) => (await client.run({ prompt: "unlocked", image_url: image })).status, IMAGE), "succeeded");
    const stored = await pages[1].evaluate(
      async ({ base, image }) => {
        const { KontextClient } = await import("/pkg/index.js");
        const persisted = new KontextClient({ baseUrl: base, storage: sessionStorage });
        const { id } = await persisted.createRun({ prompt: "kept", image_url: image });
        return { id, kept: (await persisted.resumeRuns()).map((run) => run.id) };
      },
      { base: scenario.base, image: IMAGE },
    );
    assert.deepEqual(stored.kept, [stored.id], "a storage's writes go on without the lock");
  } finally {
    await context.close();
  }
});

test("with persist, an IndexedDB that never opens holds the first run up once, for 2 s, and no run after it", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [20, 20, 60] });
  const context = await browser.newContext();
  // An open request that never answers, as WebKit's has been seen to do.
  await context.addInitScript(() => {
    IDBFactory.prototype.open = () => ({});
  });
  try {
    const page = await clientPage(context, scenario.base);
    const warnings = [];
    page.on("console", (message) => message.type() === "warning" && warnings.push(message.text()));
    const outcome = await page.evaluate(async ({ base, image }) => {
      const { KontextClient } = await import("/pkg/index.js");
      // Timed from the client's making, where the open (and its 2 s bound) begins.
      const times = [performance.now()];
      const client = new KontextClient({ baseUrl: base, persist: true, pollIntervalMs: 100 });
      const statuses = [];
      for (const prompt of ["first", "second"]) {
        statuses.push((await client.run({ prompt, image_url: image })).status);
        times.push(performance.now());
      }
      const resumed = await client.resumeRuns().then(() => "resolved", (error) => error.message);
      return { statuses, first: times[1] - times[0], second: times[2] - times[1], resumed };
    }, { base: scenario.base, image: IMAGE });
    assert.deepEqual(outcome.statuses, ["succeeded", "succeeded"]);
    assert.ok(outcome.first >= 1990, `the first run waited for the open: ${outcome.first} ms`);
    assert.ok(outcome.second < outcome.first - 1000, `the second run waited on nothing: ${outcome.second} ms`);
    assert.match(outcome.resumed, /IndexedDB did not open in 2000 ms/);
    assert.ok(warnings.some((text) => /persisted store failed/.test(text)), "the failure is reported on the console");
  } finally {
    await context.close();
  }
});
