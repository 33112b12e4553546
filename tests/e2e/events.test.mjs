// Waiting by push (issue 13) in headless Chromium: the wasm client follows runs on the dev
// server's callback relay (the mock delivers the signed callback to the server's own receiver,
// which pushes it down the run's SSE stream), and falls back to polling when the relay is
// silent, refuses or drops. GETs are counted in the mock's log. The server build's signature
// check runs in Chromium too.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { VECTORS } from "../signature-vectors.mjs";
import { createScenario, encodePng, launchBrowser, startRelayServer } from "./harness.mjs";

const SECRET = "whsec_e2e_relay";
const IMAGE = `data:image/png;base64,${encodePng(16, 12, (x, y) => [x * 16, y * 20, 90]).toString("base64")}`;

let server;
let browser;
let relay;

before(async () => {
  [server, browser] = await Promise.all([startRelayServer(SECRET), launchBrowser()]);
  relay = (await (await fetch(`${server.url}/api/runflow/_backend`)).json()).relay;
  assert.equal(relay.on, true, JSON.stringify(relay));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A page of the server's origin that makes no calls of its own. */
async function openPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${server.url}/api/runflow/_backend`);
  return { context, page, errors };
}

/**
 * Runs `client.run` (or, with `runs > 1`, that many in turn) in the page against `base`;
 * resolves `{ results: [{ id, status, callbackUrl, ways, error }] }`.
 */
function runInPage(page, { base, runs = 1, options = {}, abortAfterEventsMs }) {
  return page.evaluate(
    async ({ base, runs, options, image, abortAfterEventsMs }) => {
      const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
      await init();
      const client = new KontextClient({ baseUrl: base, pollIntervalMs: 50 });
      const results = [];
      for (let n = 0; n < runs; n++) {
        const ways = [];
        const controller = new AbortController();
        const started = Date.now();
        const onWaiting = (way) => {
          ways.push({ ...way, at: Date.now() - started });
          if (abortAfterEventsMs !== undefined && way.via === "events") setTimeout(() => controller.abort(), abortAfterEventsMs);
        };
        try {
          const run = await client.run({ prompt: `edit ${n}`, image_url: image }, { ...options, onWaiting, signal: controller.signal });
          results.push({ id: run.id, status: run.status, callbackUrl: run.callback_url, outputs: run.output?.outputs.length, url: run.output?.outputs[0]?.url, ways, ms: Date.now() - started });
        } catch (error) {
          results.push({ error: { code: error.code, message: error.message, runId: error.runId }, ways, ms: Date.now() - started });
        }
      }
      return results;
    },
    { base, runs, options, image: IMAGE, abortAfterEventsMs },
  );
}

async function logOf(base) {
  return (await (await fetch(`${server.url}${base}/log`)).json()).requests;
}

const getsOf = (log, id) => log.filter((entry) => entry.kind === "get" && entry.path.endsWith(`/runs/${id}`)).length;

test("auto: a run through the dev server waits by push and makes one GET (the check when the stream opens)", async () => {
  const { context, page, errors } = await openPage();
  try {
    const [result] = await runInPage(page, { base: "/api/runflow" });
    assert.equal(result.status, "succeeded", JSON.stringify(result));
    assert.equal(result.outputs, 1);
    // The create named no callback_url: the dev server gave it the relay's receiver.
    assert.equal(result.callbackUrl, relay.callback);
    assert.deepEqual(result.ways.map((way) => way.via), ["events"]);
    assert.equal(getsOf(await logOf("/__mock/s/default"), result.id), 1);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("auto on a bare mock scenario: polled until the header is seen, then the client sets callback_url itself", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 300], callback_secrets: [SECRET] });
  const { context, page } = await openPage();
  try {
    const [first, second] = await runInPage(page, { base: scenario.base, runs: 2 });
    assert.equal(first.status, "succeeded");
    assert.deepEqual(first.ways.map((way) => [way.via, way.reason]), [["poll", "the run's callback_url is not the relay's"]]);
    assert.equal(second.status, "succeeded");
    assert.equal(second.callbackUrl, relay.callback);
    assert.deepEqual(second.ways.map((way) => way.via), ["events"]);
    const log = await scenario.log();
    const creates = log.filter((entry) => entry.kind === "create");
    assert.equal(creates[0].body.callback_url, undefined);
    assert.equal(creates[1].body.callback_url, relay.callback, "set by the client from the advertised relay");
    assert.ok(getsOf(log, first.id) > 1, "the first run was polled");
    assert.equal(getsOf(log, second.id), 1, "the second was pushed");
  } finally {
    await context.close();
  }
});

test("wait: \"poll\" never opens a stream; wait: \"events\" without a relay polls and says why", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [50, 50, 200], callback_secrets: [SECRET] });
  const { context, page } = await openPage();
  const streams = [];
  page.on("request", (request) => request.url().endsWith("/events") && streams.push(request.url()));
  try {
    const polled = await runInPage(page, { base: scenario.base, runs: 2, options: { wait: "poll" } });
    for (const result of polled) {
      assert.equal(result.status, "succeeded");
      assert.deepEqual(result.ways, [{ via: "poll", reason: 'wait: "poll"', at: result.ways[0].at }]);
    }
    assert.equal((await scenario.log()).filter((entry) => entry.kind === "create" && entry.body.callback_url).length, 0);
    assert.deepEqual(streams, []);
    // A server that advertises nothing (the relay header is only on this server's API answers).
    const [lonely] = await page.evaluate(async (image) => {
      const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
      await init();
      const ways = [];
      const fetchWithoutHeader = async (url, init) => {
        const response = await fetch(url, init);
        const headers = new Headers(response.headers);
        headers.delete("runflow-kontext-relay");
        return new Response(await response.text(), { status: response.status, headers });
      };
      const client = new KontextClient({ baseUrl: "/api/runflow", pollIntervalMs: 50, fetch: fetchWithoutHeader });
      const run = await client.run({ prompt: "x", image_url: image }, { wait: "events", onWaiting: (way) => ways.push(way) });
      return [{ status: run.status, ways }];
    }, IMAGE);
    assert.equal(lonely.status, "succeeded");
    assert.deepEqual(lonely.ways, [{ via: "poll", reason: "the server advertises no callback relay" }]);
  } finally {
    await context.close();
  }
});

test("a relay that stays silent (the callback was refused) gives way to polling after eventsSilenceMs", async () => {
  // Unsigned deliveries: the receiver answers 401 and publishes nothing.
  const scenario = await createScenario(server.url, { lifecycle_ms: [50, 50, 200], callback_secrets: [SECRET], callback_signing: "none" });
  const { context, page } = await openPage();
  try {
    const [result] = await runInPage(page, { base: scenario.base, options: { callbackUrl: relay.callback, eventsSilenceMs: 1500 } });
    assert.equal(result.status, "succeeded", JSON.stringify(result));
    assert.deepEqual(result.ways.map((way) => [way.via, way.reason]), [
      ["events", "the server's callback relay"],
      ["poll", "the callback relay stayed silent"],
    ]);
    assert.ok(result.ways[1].at >= 1400, `fell back after ${result.ways[1].at} ms`);
    // The check on open, then the first poll at once after the fallback.
    assert.equal(getsOf(await scenario.log(), result.id), 2);
  } finally {
    await context.close();
  }
});

test("a relay that refuses the stream (503) falls back to polling at once", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [50, 50, 400], callback_secrets: [SECRET] });
  const { context, page } = await openPage();
  await page.route("**/api/runflow/runs/*/events", (route) => route.fulfill({ status: 503, contentType: "application/json", body: '{"code":"store_unavailable"}' }));
  try {
    const [result] = await runInPage(page, { base: scenario.base, options: { callbackUrl: relay.callback } });
    assert.equal(result.status, "succeeded", JSON.stringify(result));
    assert.deepEqual(result.ways.map((way) => [way.via, way.reason]), [
      ["events", "the server's callback relay"],
      ["poll", "the callback relay is unavailable"],
    ]);
    assert.ok(result.ways[1].at < 1000, `fell back after ${result.ways[1].at} ms`);
  } finally {
    await context.close();
  }
});

test("a stream that drops mid-run reconnects, and the run is checked again on the new stream", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 1500], callback_secrets: [SECRET] });
  const { context, page } = await openPage();
  let connections = 0;
  await page.route("**/api/runflow/runs/*/events", async (route) => {
    connections += 1;
    // The first connection opens, then ends at once (asking for a quick retry): a dropped stream.
    if (connections === 1) return route.fulfill({ status: 200, contentType: "text/event-stream", body: "retry: 200\n: hello\n\n" });
    return route.continue();
  });
  try {
    const [result] = await runInPage(page, { base: scenario.base, options: { callbackUrl: relay.callback } });
    assert.equal(result.status, "succeeded", JSON.stringify(result));
    assert.deepEqual(result.ways.map((way) => way.via), ["events"], "still by push after the reconnect");
    assert.ok(connections >= 2, `${connections} connection(s)`);
    assert.equal(getsOf(await scenario.log(), result.id), connections, "one check per (re)connection");
  } finally {
    await context.close();
  }
});

test("a stream that drops and cannot reconnect gives way to polling", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 1200], callback_secrets: [SECRET] });
  const { context, page } = await openPage();
  let connections = 0;
  await page.route("**/api/runflow/runs/*/events", (route) => {
    connections += 1;
    if (connections === 1) return route.fulfill({ status: 200, contentType: "text/event-stream", body: "retry: 200\n: hello\n\n" });
    return route.abort("connectionrefused");
  });
  try {
    const [result] = await runInPage(page, { base: scenario.base, options: { callbackUrl: relay.callback } });
    assert.equal(result.status, "succeeded", JSON.stringify(result));
    assert.deepEqual(result.ways.map((way) => [way.via, way.reason]), [
      ["events", "the server's callback relay"],
      ["poll", "the callback relay is unavailable"],
    ]);
    assert.equal(connections, 2, "one failed reconnect, then no more");
    assert.ok(result.ways[1].at < 1200, `fell back after ${result.ways[1].at} ms, before the run ended`);
  } finally {
    await context.close();
  }
});

test("an event without the output (or for another run) does not end the wait empty-handed", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [50, 50, 500], callback_secrets: [SECRET] });
  const { context, page } = await openPage();
  await page.route("**/api/runflow/runs/*/events", (route) => {
    const id = new URL(route.request().url()).pathname.split("/").at(-2);
    // The relay's events: one for another run, then this run's end without its output.
    const other = JSON.stringify({ runId: "someone-else", status: "succeeded", statusCode: "succeeded", output: { outputs: [{ url: "https://elsewhere.example/not-yours.png" }] } });
    const empty = JSON.stringify({ runId: id, status: "succeeded", statusCode: "succeeded", output: null });
    return route.fulfill({ status: 200, contentType: "text/event-stream", body: `retry: 60000\nid: 1\ndata: ${other}\n\nid: 2\ndata: ${empty}\n\n` });
  });
  // The check on open reads the run while it is still running, and its answer comes late, so the
  // events are taken in after it, once the run has ended on the mock.
  let gets = 0;
  await page.route(`**${scenario.base}/v1/runs/*`, async (route) => {
    if (route.request().method() !== "GET" || ++gets > 1) return route.continue();
    const response = await route.fetch();
    await new Promise((resolve) => setTimeout(resolve, 1200));
    return route.fulfill({ response });
  });
  try {
    const [result] = await runInPage(page, { base: scenario.base, options: { callbackUrl: relay.callback } });
    assert.equal(result.status, "succeeded", JSON.stringify(result));
    assert.equal(result.outputs, 1, "the output was read from the run");
    assert.doesNotMatch(result.url, /elsewhere/, "another run's event was not taken in");
    assert.deepEqual(result.ways.map((way) => way.via), ["events"]);
    assert.equal(getsOf(await scenario.log(), result.id), 2, "the check on open, and one read for the output");
  } finally {
    await context.close();
  }
});

test("at most 4 runs of one origin wait by push at once; the others poll, and a fetch stand-in without headers is no relay", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, 1500], callback_secrets: [SECRET] });
  const { context, page } = await openPage();
  try {
    const results = await page.evaluate(
      async ({ base, callbackUrl, image }) => {
        const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
        await init();
        const client = new KontextClient({ baseUrl: base, pollIntervalMs: 50 });
        const runs = Array.from({ length: 6 }, async (_, n) => {
          const ways = [];
          const run = await client.run({ prompt: `batch ${n}`, image_url: image }, { callbackUrl, onWaiting: (way) => ways.push(way) });
          return { status: run.status, ways };
        });
        // A stand-in for fetch that gives no headers: the run is read, no relay is learnt.
        const bare = new KontextClient({
          baseUrl: base,
          fetch: async (url, init) => {
            const response = await fetch(url, init);
            const text = await response.text();
            return { status: response.status, text: async () => text };
          },
        });
        const created = await client.createRun({ prompt: "bare", image_url: image });
        const read = await bare.getRun(created.id);
        return { runs: await Promise.all(runs), bare: read.id === created.id };
      },
      { base: scenario.base, callbackUrl: relay.callback, image: IMAGE },
    );
    assert.equal(results.bare, true);
    const ways = results.runs.map((run) => (assert.equal(run.status, "succeeded"), run.ways[0]));
    assert.equal(ways.filter((way) => way.via === "events").length, 4, JSON.stringify(ways));
    assert.deepEqual(
      ways.filter((way) => way.via === "poll").map((way) => way.reason),
      ["4 runs are waiting by push on this server already", "4 runs are waiting by push on this server already"],
    );
  } finally {
    await context.close();
  }
});

test("push: the AbortSignal and the deadline still hold, and a failed run's reason comes from the run", async () => {
  const long = await createScenario(server.url, { lifecycle_ms: [50, 50, 20000], callback_secrets: [SECRET] });
  const failing = await createScenario(server.url, { lifecycle_ms: [50, 50, 200], callback_secrets: [SECRET], final_status: "failed" });
  const { context, page } = await openPage();
  try {
    const [aborted] = await runInPage(page, { base: long.base, options: { callbackUrl: relay.callback }, abortAfterEventsMs: 300 });
    assert.equal(aborted.error?.code, "aborted", JSON.stringify(aborted));
    assert.ok(aborted.error.runId, "the error names the run");
    assert.ok(aborted.ms < 3000, `${aborted.ms} ms`);
    const [late] = await runInPage(page, { base: long.base, options: { callbackUrl: relay.callback, timeoutMs: 1500 } });
    assert.equal(late.error?.code, "timeout", JSON.stringify(late));
    assert.ok(late.ms >= 1400 && late.ms < 4000, `${late.ms} ms`);
    const [failed] = await runInPage(page, { base: failing.base, options: { callbackUrl: relay.callback } });
    assert.equal(failed.error?.code, "run_failed", JSON.stringify(failed));
    assert.match(failed.error.message, /Runflow said/);
    assert.deepEqual(failed.ways.map((way) => way.via), ["events"]);
  } finally {
    await context.close();
  }
});

test("verifyCallbackSignature in Chromium (the server build): the signature vectors", async () => {
  const { context, page, errors } = await openPage();
  try {
    const verdicts = await page.evaluate(async (vectors) => {
      const { default: init, verifyCallbackSignature } = await import("/pkg/server/runflow_kontext_server.js");
      await init();
      return vectors.map(([body, header, secrets]) => [
        verifyCallbackSignature(body, header, secrets),
        verifyCallbackSignature(new TextEncoder().encode(body), header, secrets),
      ]);
    }, VECTORS);
    VECTORS.forEach(([, , , valid, what], n) => assert.deepEqual(verdicts[n], [valid, valid], what));
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
