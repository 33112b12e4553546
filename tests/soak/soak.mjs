// Soak (issue 11): SOAK_RUNS (default 1,000) runs through ONE client in headless Chromium, several
// at a time, with a seeded 5 % of them carrying a fault of the kinds the fault matrix uses, on the
// create, the gets, the client_ref look-up or one of the upload steps. `make soak` runs it.
//
// What it asserts (any failure exits 1 and is listed in target/soak/report.json):
// - every call settles, resolving or rejecting with a RunflowError whose code is one of README
//   "Errors", within its deadline (`timeoutMs` of the call) plus GRACE_MS;
// - zero duplicate runs: for each logical create (one client_ref, chosen here), the mock holds at
//   most one run with that client_ref, exactly one when the call resolved (and it is the run the
//   call resolved with), none with a client_ref nobody sent; every POST of one logical create
//   carries one Idempotency-Key; no create is POSTed again after an unknown outcome without a
//   look-up in between (as the matrix checks); a call that rejects while the mock holds its run
//   says so (`runId` or `clientRef`), never as if nothing was made;
// - no unhandled rejection, page error, wasm trap or panic in the page;
// - the same client keeps working: after the soak, a clean run and a clean getRun on a fresh
//   scenario succeed;
// - wasm memory flat: `WebAssembly.Memory` byte length after the runs equals its length after the
//   first 100 (both after forced GC). The JS heap (`performance.memory.usedJSHeapSize` after
//   forced GC) is recorded, not gated.
//
// How the faults reach the runs. The client is shared, so its `baseUrl` is fixed: it is `/soak`
// on a small pass-through (the matrix's: every answer with `Connection: close`, so Chromium never
// silently resends a request, and a dropped answer reaches the client as a dropped connection),
// which maps `/soak/...` to the current mock scenario. The runs go in batches of SOAK_BATCH
// (default 100), one fresh scenario per batch, switched only once every call of the batch has
// settled. Just before a faulted run starts, its rule(s) are appended to the batch's fault queue
// (`times: 1`): the fault hits the next request of that kind, which with SOAK_CONCURRENCY runs in
// flight (default 8) is usually, not always, that run's own. The plan (which runs carry which
// fault) is a pure function of the seed; which request a fault lands on depends on timing. The
// mock's log says exactly which requests got a fault ("fired"), and the accounting of runs per
// client_ref is exact whatever run a fault hit.
//
// Batches cycle through upstreams (SOAK_UPSTREAMS, default direct,no_idempotency,runflow_proxy):
// the mock as Runflow's API; a mock that ignores Idempotency-Key (only the client's look-up keeps
// one create to one run); and the Runflow-proxy emulation (no Idempotency-Key upstream, search
// refused, so an unknown create must not be POSTed again). Outcomes differ by upstream, as the
// fault matrix documents; only the assertions above are gated.
//
// Knobs: SOAK_SEED (default 11, issue 11), SOAK_RUNS, SOAK_CONCURRENCY, SOAK_BATCH,
// SOAK_FAULT_RATE (default 0.05), SOAK_UPSTREAMS, SOAK_VERBOSE=1 (every faulted run's outcome).

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ROOT, encodePng, startPassThrough as startSharedPassThrough, startServer } from "../e2e/harness.mjs";

const SEED = intEnv("SOAK_SEED", 11);
const RUNS = intEnv("SOAK_RUNS", 1000);
const CONCURRENCY = intEnv("SOAK_CONCURRENCY", 8);
const BATCH = intEnv("SOAK_BATCH", 100);
const FAULT_RATE = Number(process.env.SOAK_FAULT_RATE ?? 0.05);
const UPSTREAMS = (process.env.SOAK_UPSTREAMS ?? "direct,no_idempotency,runflow_proxy").split(",").map((s) => s.trim());
const VERBOSE = !!process.env.SOAK_VERBOSE;
/** The memory checkpoint: after this many runs (rounded up to a batch boundary). */
const FIRST_CHECKPOINT = Math.min(100, RUNS);

/** The mock's run lifecycle per batch (ms queued, dispatching, running): a run takes 150 ms. */
const LIFECYCLE_MS = [30, 30, 90];
/** The shared client. `timeoutMs` is per request: the `slow` fault's first byte comes after it, and a `hang` is cut by it. */
const CLIENT = { baseUrl: "/soak", retryBaseMs: 5, retryMaxMs: 40, pollIntervalMs: 20, timeoutMs: 1000, uploadThreshold: 1024 };
const SLOW_MS = 1500;
/** Each call's own deadline (its `timeoutMs`), and how far past it a call may settle before it counts as hung. */
const DEADLINES = { run: 20_000, createRun: 10_000, waitForRun: 15_000 };
const GRACE_MS = 2_000;
/** The call deadline of a run faulted with `hang_deadline` (a clean run takes 150 to 400 ms here). */
const HANG_DEADLINE_MS = 800;

const UPSTREAM_CONFIG = {
  direct: {},
  no_idempotency: { idempotency: false },
  runflow_proxy: { runflow_proxy: true },
};

// --- Faults (the matrix's kinds) ---------------------------------------------------------------

const HTML = "<!doctype html><html><body><h1>Welcome to the network</h1></body></html>";
/** Every fault action, and the request kinds it applies to ("acted" ones only where work is done). */
const ACTIONS = {
  drop: { action: () => ({ type: "drop" }) },
  create_then_drop: { acted: true, action: () => ({ type: "create_then_drop" }) },
  http_429: { action: () => ({ type: "error", status: 429 }) },
  http_429_retry_after: { action: (rng) => ({ type: "error", status: 429, retry_after: pick(rng, ["0", "1"]) }) },
  http_500: { action: () => ({ type: "error", status: 500 }) },
  http_502: { action: () => ({ type: "error", status: 502 }) },
  http_503: { action: () => ({ type: "error", status: 503 }) },
  http_504: { action: () => ({ type: "error", status: 504 }) },
  create_then_error: { acted: true, action: () => ({ type: "create_then_error", status: 502 }) },
  truncate: { action: () => ({ type: "truncate" }) },
  html: { action: () => ({ type: "raw", status: 200, content_type: "text/html; charset=utf-8", body: HTML }) },
  slow: { action: () => ({ type: "delay", ms: SLOW_MS }) },
  // Cut by the client's per-request timeoutMs, then retried (or looked up).
  hang: { action: () => ({ type: "hang" }) },
  // The faulted run's call has a deadline shorter than the per-request timeout: when the hang
  // lands on one of its own requests, the call's deadline is what ends it.
  hang_deadline: { action: () => ({ type: "hang" }), deadlineMs: HANG_DEADLINE_MS },
};
/** Where a fault may go. A `search` fault is the matrix's look-up cell: the create's answer is lost after it acted (`create_then_drop`), then the fault hits the look-up. The upload steps need a run with a local image. */
const TARGETS = ["create", "get", "search", "upload_create", "upload_put", "upload_confirm"];
const ACTED_KINDS = new Set(["create", "upload_create", "upload_put", "upload_confirm"]);
/** Create attempts whose outcome the client cannot know: a look-up must come before the next POST (as the matrix). */
const UNKNOWN_FAULTS = new Set(["drop", "create_then_drop", "create_then_hang", "hang", "delay", "raw", "truncate", "huge", "create_then_error"]);

// --- Plan: a pure function of the seed -----------------------------------------------------------

/** mulberry32: small, seedable, good enough to pick faults. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const pick = (rng, xs) => xs[Math.floor(rng() * xs.length)];
function shuffle(rng, xs) {
  const out = [...xs];
  for (let k = out.length - 1; k > 0; k--) {
    const j = Math.floor(rng() * (k + 1));
    [out[k], out[j]] = [out[j], out[k]];
  }
  return out;
}

function makePlan() {
  const rng = prng(SEED);
  const items = [];
  for (let i = 0; i < RUNS; i++) {
    const r = rng();
    // Mostly client.run(input); some createRun + waitForRun; some run() with a local image, uploaded.
    const op = r < 0.7 ? "run" : r < 0.85 ? "create_wait" : "run_image";
    items.push({ i, op, ref: `soak-${SEED}-${i}`, fault: null });
  }
  // Exactly round(rate × runs) faulted runs, chosen by a seeded partial shuffle.
  const order = items.map((_, i) => i);
  const faulted = Math.round(RUNS * FAULT_RATE);
  for (let k = 0; k < faulted; k++) {
    const j = k + Math.floor(rng() * (order.length - k));
    [order[k], order[j]] = [order[j], order[k]];
  }
  // Each faulted run takes the next (target, kind) pair of a seeded shuffle of every pair that
  // applies (80), reshuffled once all are used: every kind and every target shows up, none twice
  // before all have. A run faulted on an upload step is a run with a local image.
  const pairs = TARGETS.flatMap((target) => Object.keys(ACTIONS).filter((kind) => !ACTIONS[kind].acted || ACTED_KINDS.has(target)).map((kind) => [target, kind]));
  let deck = [];
  for (const i of order.slice(0, faulted).sort((a, b) => a - b)) {
    if (deck.length === 0) deck = shuffle(rng, pairs);
    const [target, kind] = deck.pop();
    const item = items[i];
    if (target.startsWith("upload_")) item.op = "run_image";
    const action = ACTIONS[kind].action(rng);
    const rules =
      target === "search"
        ? [{ on: "create", times: 1, action: { type: "create_then_drop" } }, { on: "search", times: 1, action }]
        : [{ on: target, times: 1, action }];
    item.fault = { target, kind, rules, deadlineMs: ACTIONS[kind].deadlineMs };
  }
  return items;
}

// --- Main ------------------------------------------------------------------------------------------

const PNG_INLINE = encodePng(8, 8, (x, y) => [x * 30, y * 30, 120]);
const IMAGE_URL = `data:image/png;base64,${PNG_INLINE.toString("base64")}`;
// A local picture over the client's uploadThreshold (noise does not compress), so it is uploaded.
const noise = prng(SEED ^ 0x5eed);
const PNG_LOCAL = encodePng(24, 24, () => [noise() * 256, noise() * 256, noise() * 256].map(Math.floor));
if (PNG_INLINE.length >= CLIENT.uploadThreshold || PNG_LOCAL.length < CLIENT.uploadThreshold) throw new Error("fixture sizes");

const DOCUMENTED_CODES = documentedCodes();

async function main() {
  const started = Date.now();
  const plan = makePlan();
  const failures = [];
  const fail = (text) => failures.push(text);
  const server = await startServer({ MOCK_LIFECYCLE_MS: LIFECYCLE_MS.join(",") });
  const pass = await startPassThrough(server.url);
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic",
      "--enable-precise-memory-info", "--js-flags=--expose-gc",
      "--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
    ],
  });
  const problems = [];
  let report;
  try {
    const page = await (await browser.newContext()).newPage();
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    page.on("crash", () => problems.push("the page crashed"));
    page.on("console", (message) => {
      const text = message.text();
      // Chromium logs every failed request by itself; the soak provokes them on purpose.
      if (/Failed to load resource|net::ERR_/.test(text)) return;
      if (message.type() === "error" || /RuntimeError|unreachable|panicked/.test(text)) problems.push(`console.${message.type()}: ${text}`);
    });
    await page.goto(`${pass.url}/__soak/`);
    // The whole plan goes to the page once, before the first measurement: the arguments of a
    // page.evaluate stay in the page's JS heap (measured: about 37 KB for each 100-item batch,
    // whatever the client does; retained on the DevTools side of Playwright's session), so a plan
    // sent per batch would show as a steady JS heap growth that is the harness's, not the client's.
    const env = await page.evaluate(pageSetup, { client: CLIENT, image: [...PNG_LOCAL], imageUrl: IMAGE_URL, deadlines: DEADLINES, graceMs: GRACE_MS, plan });
    if (!env.gc || !env.preciseMemory) fail(`harness: gc ${env.gc}, precise memory ${env.preciseMemory}`);

    const memory = { start: await page.evaluate(() => window.__soak.measure()), batches: [] };
    const results = [];
    const batches = [];
    let done = 0;
    for (let b = 0; done < RUNS; b++) {
      const upstream = UPSTREAMS[b % UPSTREAMS.length];
      if (!UPSTREAM_CONFIG[upstream]) throw new Error(`SOAK_UPSTREAMS: unknown upstream ${upstream}`);
      const items = plan.slice(done, done + BATCH);
      const scenario = await control(server.url, "/__mock/scenarios", { method: "POST", body: JSON.stringify({ lifecycle_ms: LIFECYCLE_MS, ...UPSTREAM_CONFIG[upstream] }) });
      pass.route(scenario.base_url);
      const t0 = Date.now();
      const out = await page.evaluate((args) => window.__soak.batch(args), { scenarioBase: scenario.base_url, concurrency: CONCURRENCY, from: done, to: done + items.length });
      const batchMs = Date.now() - t0;
      // Calls that did not settle are still pending in the page; their scenario stays as it is.
      const log = (await control(server.url, `${scenario.base_url}/log`)).requests;
      const runs = (await control(server.url, `${scenario.base_url}/runs`)).items;
      const checked = checkBatch({ b, upstream, items, out, log, runs });
      for (const f of checked.failures) fail(`batch ${b} (${upstream}, runs ${items[0].i}..${items.at(-1).i}): ${f}`);
      results.push(...checked.results);
      batches.push({ batch: b, upstream, scenario: scenario.id, runs: items.length, ms: batchMs, requests: log.length, mockRuns: runs.length, faultsFired: checked.fired.length });
      done += items.length;
      const measured = { runs: done, ...(await page.evaluate(() => window.__soak.measure())) };
      memory.batches.push(measured);
      if (memory.afterFirst === undefined && done >= FIRST_CHECKPOINT) memory.afterFirst = measured;
      batches.at(-1).wasmBytes = measured.wasmBytes;
      batches.at(-1).jsHeapBytes = measured.jsHeapBytes;
      batches.at(-1).fired = checked.fired;
      console.error(
        `soak: batch ${b} (${upstream}) ${items.length} runs in ${(batchMs / 1000).toFixed(1)} s, ${checked.fired.length} faults fired, ` +
          `${checked.failures.length} failures; wasm ${measured.wasmBytes} B, JS heap ${measured.jsHeapBytes} B`,
      );
    }
    memory.end = { runs: done, ...(await page.evaluate(() => window.__soak.measure())) };
    const late = await page.evaluate(() => window.__soak.late);

    // The same client, on a fresh clean scenario.
    const clean = await control(server.url, "/__mock/scenarios", { method: "POST", body: JSON.stringify({ lifecycle_ms: LIFECYCLE_MS }) });
    pass.route(clean.base_url);
    const after = await page.evaluate(() => window.__soak.clean());
    if (!after.ok) fail(`the same client after the soak: ${after.error}`);
    const pageProblems = await page.evaluate(() => window.__soak.problems);
    problems.push(...pageProblems);
    for (const p of problems) fail(`page: ${p}`);

    if (memory.end.wasmBytes !== memory.afterFirst.wasmBytes) {
      fail(`wasm memory grew from ${memory.afterFirst.wasmBytes} B after ${memory.afterFirst.runs} runs to ${memory.end.wasmBytes} B after ${memory.end.runs}`);
    }
    report = summarise({ plan, results, batches, memory, late, failures, env, wallMs: Date.now() - started, after });
  } finally {
    await browser.close();
    await pass.stop();
    await server.stop();
  }
  const dir = join(ROOT, "target/soak");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "report.json"), JSON.stringify(report, null, 2) + "\n");
  if (VERBOSE) {
    for (const r of report.faultedRuns) console.error(`  run ${r.i} ${r.op} [${r.upstream}] ${r.fault}: ${r.outcome} (${r.ms} ms)`);
  }
  console.log(report.summary);
  if (failures.length) {
    console.log(`soak: FAILED (${failures.length}), seed ${SEED}:\n${failures.map((f) => `  - ${f}`).join("\n")}`);
    process.exitCode = 1;
  }
}

// --- Checks of one batch ---------------------------------------------------------------------------

function checkBatch({ b, upstream, items, out, log, runs }) {
  const failures = [];
  const results = [];
  if (log.length && log[0].seq !== 0) failures.push(`the mock's log lost its oldest entries (first seq ${log[0].seq}): use a smaller SOAK_BATCH`);
  const refs = new Set(items.map((item) => item.ref));
  const runsByRef = new Map();
  for (const run of runs) {
    if (!refs.has(run.client_ref)) failures.push(`a run with a client_ref nobody sent: ${run.id} client_ref ${JSON.stringify(run.client_ref)}`);
    runsByRef.set(run.client_ref, [...(runsByRef.get(run.client_ref) ?? []), run]);
  }
  const runRef = new Map(runs.map((run) => [run.id, run.client_ref]));
  const entryRef = (e) => {
    if (e.kind === "create") return e.body?.client_ref;
    if (e.kind === "search") return (new URLSearchParams(e.query ?? "").get("q") ?? "").match(/client_ref:"?([^"\s]+)/)?.[1];
    if (e.kind === "get") return runRef.get(e.path.split("/").pop());
    return undefined;
  };
  const fired = log.filter((e) => e.fault).map((e) => ({ kind: e.kind, fault: e.fault, ref: entryRef(e), status: e.status }));
  const byRef = new Map();
  for (const e of log) {
    const ref = entryRef(e);
    if (ref !== undefined) byRef.set(ref, [...(byRef.get(ref) ?? []), e]);
  }

  for (const item of items) {
    const r = out.find((x) => x.i === item.i);
    const name = `run ${item.i} (${item.op}${item.fault ? `, fault ${item.fault.kind} on ${item.fault.target}` : ""})`;
    const held = runsByRef.get(item.ref) ?? [];
    if (!r) {
      failures.push(`${name}: no result from the page`);
      continue;
    }
    for (const call of r.calls) {
      if (call.unsettled) failures.push(`${name}: ${call.name} unsettled ${call.limitMs} ms after it began (its deadline ${call.deadlineMs} ms + ${GRACE_MS} ms)`);
      else if (call.ms > call.deadlineMs + GRACE_MS) failures.push(`${name}: ${call.name} settled after ${Math.round(call.ms)} ms, past its deadline of ${call.deadlineMs} ms`);
      if (call.error) {
        if (!call.error.isRunflowError) failures.push(`${name}: ${call.name} rejected with ${call.error.name} (not a RunflowError): ${call.error.message}`);
        else if (!DOCUMENTED_CODES.has(call.error.code)) failures.push(`${name}: ${call.name} rejected with an undocumented code ${call.error.code}`);
        if (call.error.clientRef != null && call.error.clientRef !== item.ref) failures.push(`${name}: error.clientRef ${call.error.clientRef} is not the client_ref sent (${item.ref})`);
      }
    }
    if (held.length > 1) failures.push(`${name}: DUPLICATE: the mock holds ${held.length} runs with client_ref ${item.ref}: ${held.map((x) => x.id).join(", ")}`);
    if (r.runId) {
      if (held.length === 0) failures.push(`${name}: resolved with run ${r.runId}, but the mock holds no run with client_ref ${item.ref}`);
      else if (!held.some((x) => x.id === r.runId)) failures.push(`${name}: resolved with run ${r.runId}, not the mock's run ${held[0].id} of client_ref ${item.ref}`);
    }
    const error = r.calls.find((c) => c.error)?.error;
    if (error && held.length && error.runId == null && error.clientRef == null) {
      failures.push(`${name}: rejected (${error.code}) with neither runId nor clientRef, as if no run was made, but the mock holds ${held[0].id}`);
    }
    const entries = byRef.get(item.ref) ?? [];
    const creates = entries.filter((e) => e.kind === "create");
    const keys = new Set(creates.map((e) => e.headers?.["idempotency-key"]).filter(Boolean));
    if (keys.size > 1) failures.push(`${name}: its create POSTs carried ${keys.size} Idempotency-Keys`);
    let unknownSince = null;
    for (const e of entries) {
      if (e.kind === "search") unknownSince = null;
      if (e.kind !== "create") continue;
      if (unknownSince !== null) failures.push(`${name}: create #${e.seq} POSTed after the unknown outcome of #${unknownSince} with no look-up in between`);
      const unknown = UNKNOWN_FAULTS.has(e.fault) || e.status == null || e.status === 408 || (e.status >= 500 && e.status !== 503);
      unknownSince = unknown ? e.seq : null;
    }
    results.push({
      i: item.i,
      op: item.op,
      upstream,
      batch: b,
      fault: item.fault ? `${item.fault.kind} on ${item.fault.target}` : null,
      outcome: r.outcome,
      ms: Math.round(r.ms),
      runsHeld: held.length,
      creates: creates.length,
      unsettled: r.calls.some((c) => c.unsettled),
      // The faults the log shows on this run's own requests (creates, look-ups, gets; an upload
      // step's request carries no client_ref).
      faultsHit: fired.filter((f) => f.ref === item.ref).map((f) => `${f.fault} on ${f.kind} (${f.status ?? "no answer"})`),
      error: r.calls.find((c) => c.error)?.error ?? null,
    });
  }
  return { failures, results, fired };
}

function summarise({ plan, results, batches, memory, late, failures, env, wallMs, after }) {
  const count = (xs) => Object.fromEntries([...xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map())].sort((a, b) => b[1] - a[1]));
  const faulted = plan.filter((item) => item.fault);
  const outcomes = count(results.map((r) => r.outcome));
  const byUpstream = {};
  for (const r of results) (byUpstream[r.upstream] ??= []).push(r.outcome);
  const duplicates = results.filter((r) => r.runsHeld > 1).length;
  const unsettled = results.filter((r) => r.unsettled).length;
  const faultsByKind = count(faulted.map((item) => item.fault.kind));
  const faultsByTarget = count(faulted.map((item) => item.fault.target));
  const rulesInjected = faulted.reduce((n, item) => n + item.fault.rules.length, 0);
  const firedTotal = batches.reduce((n, b) => n + b.faultsFired, 0);
  const heap = (m) => m.jsHeapBytes;
  const summary =
    `soak: ${results.length} runs (seed ${SEED}, ${CONCURRENCY} at a time), ${faulted.length} faults injected ` +
    `(by kind ${fmt(faultsByKind)}; by target ${fmt(faultsByTarget)}; ${rulesInjected} rules, ${firedTotal} fired), ` +
    `${duplicates} duplicates, ${unsettled} unsettled, outcomes {${fmt(outcomes)}}, ` +
    `wasm memory ${memory.afterFirst.wasmBytes} -> ${memory.end.wasmBytes} bytes (after ${memory.afterFirst.runs} -> ${memory.end.runs} runs; ${memory.start.wasmBytes} at start), ` +
    `JS heap ${heap(memory.afterFirst)} -> ${heap(memory.end)} bytes (${heap(memory.start)} at start), ` +
    `wall ${(wallMs / 1000).toFixed(1)} s, ${failures.length ? `${failures.length} FAILURES` : "all checks passed"}`;
  return {
    summary,
    seed: SEED,
    runs: results.length,
    concurrency: CONCURRENCY,
    batchSize: BATCH,
    faultRate: FAULT_RATE,
    upstreams: UPSTREAMS,
    client: CLIENT,
    lifecycleMs: LIFECYCLE_MS,
    deadlinesMs: DEADLINES,
    ops: count(plan.map((item) => item.op)),
    faults: { injected: faulted.length, byKind: faultsByKind, byTarget: faultsByTarget, rulesInjected, rulesFired: firedTotal },
    duplicates,
    unsettled,
    settledLate: late,
    outcomes,
    outcomesByUpstream: Object.fromEntries(Object.entries(byUpstream).map(([k, v]) => [k, count(v)])),
    memory: {
      wasmBytes: { start: memory.start.wasmBytes, afterFirst: memory.afterFirst.wasmBytes, end: memory.end.wasmBytes, growth: memory.end.wasmBytes - memory.afterFirst.wasmBytes },
      jsHeapBytes: { start: heap(memory.start), afterFirst: heap(memory.afterFirst), end: heap(memory.end), growth: heap(memory.end) - heap(memory.afterFirst) },
      checkpoints: { afterFirst: memory.afterFirst.runs, end: memory.end.runs },
      afterEachBatch: memory.batches,
    },
    sameClientAfter: after,
    wallMs,
    browser: env.userAgent,
    batches,
    faultedRuns: results.filter((r) => r.fault).map(({ error, ...r }) => r),
    notSucceeded: results.filter((r) => r.outcome !== "succeeded"),
    failures,
  };
}

const fmt = (obj) => Object.entries(obj).map(([k, v]) => `${k}: ${v}`).join(", ");

// --- The page side (serialised into the page by page.evaluate) -----------------------------------

async function pageSetup({ client, image, imageUrl, deadlines, graceMs, plan }) {
  const mod = await import("/pkg/runflow_kontext.js");
  const wasm = await mod.default();
  const state = { problems: [], late: [] };
  window.__soak = state;
  window.addEventListener("unhandledrejection", (event) => {
    state.problems.push(`unhandledrejection: ${event.reason?.stack ?? event.reason}`);
  });
  window.addEventListener("error", (event) => state.problems.push(`error event: ${event.message}`));
  const shared = new mod.KontextClient(client);
  const collect = async () => {
    for (let i = 0; i < 3; i++) {
      globalThis.gc?.();
      await new Promise((r) => setTimeout(r, 20));
    }
    globalThis.gc?.();
  };
  state.measure = async () => {
    await collect();
    return { wasmBytes: wasm.memory.buffer.byteLength, jsHeapBytes: performance.memory?.usedJSHeapSize ?? null };
  };
  const describe = (e) => {
    const error = { isRunflowError: e instanceof mod.RunflowError, name: e?.name, message: String(e?.message ?? e).slice(0, 300) };
    for (const k of ["code", "status", "runId", "clientRef", "retryable", "retryAfterMs", "step"]) error[k] = e?.[k] ?? null;
    return error;
  };
  /** One call, watched: unsettled when still pending `deadline + grace` ms after it began. */
  const watch = async (name, deadlineMs, start, i) => {
    const t0 = performance.now();
    const limitMs = deadlineMs + graceMs;
    let timer;
    const call = start().then(
      (value) => ({ value }),
      (e) => ({ error: describe(e) }),
    );
    const outcome = await Promise.race([call, new Promise((r) => (timer = setTimeout(() => r({ unsettled: true }), limitMs)))]);
    clearTimeout(timer);
    if (outcome.unsettled) {
      call.then((late) => state.late.push({ i, name, ms: performance.now() - t0, outcome: late.error ? late.error.code : late.value?.status }));
      return { name, deadlineMs, limitMs, unsettled: true, ms: performance.now() - t0 };
    }
    return { name, deadlineMs, ms: performance.now() - t0, ...outcome };
  };
  const runOne = async (item) => {
    const t0 = performance.now();
    const input = { prompt: `soak run ${item.i}`, image_url: item.op === "run_image" ? new Uint8Array(image) : imageUrl };
    const calls = [];
    const own = item.fault?.deadlineMs;
    const deadline = (name) => own ?? deadlines[name];
    let runId = null;
    let outcome;
    if (item.op === "create_wait") {
      const created = await watch("createRun", deadline("createRun"), () => shared.createRun(input, { clientRef: item.ref, timeoutMs: deadline("createRun") }), item.i);
      calls.push(created);
      if (created.value) {
        runId = created.value.id;
        const waited = await watch("waitForRun", deadline("waitForRun"), () => shared.waitForRun(runId, { timeoutMs: deadline("waitForRun") }), item.i);
        calls.push(waited);
        if (waited.value && waited.value.id !== runId) state.problems.push(`run ${item.i}: waitForRun(${runId}) resolved with run ${waited.value.id}`);
      }
    } else {
      const ran = await watch("run", deadline("run"), () => shared.run(input, { clientRef: item.ref, timeoutMs: deadline("run") }), item.i);
      calls.push(ran);
      if (ran.value) runId = ran.value.id;
    }
    const last = calls.at(-1);
    outcome = last.unsettled ? "unsettled" : last.error ? last.error.code : last.value.status;
    // Keep results small and serialisable.
    for (const c of calls) if (c.value) c.value = { id: c.value.id, status: c.value.status };
    return { i: item.i, runId, outcome, calls, ms: performance.now() - t0 };
  };
  state.batch = async ({ scenarioBase, concurrency, from, to }) => {
    const items = plan.slice(from, to);
    const out = [];
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const item = items[next++];
        if (item.fault) {
          const response = await fetch(`${scenarioBase}/faults`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(item.fault.rules) });
          if (response.status !== 204) throw new Error(`faults: HTTP ${response.status} ${await response.text()}`);
        }
        out.push(await runOne(item));
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return out;
  };
  state.clean = async () => {
    try {
      const run = await shared.run({ prompt: "after the soak", image_url: imageUrl }, { timeoutMs: 10_000 });
      const again = await shared.getRun(run.id, { timeoutMs: 5_000 });
      if (run.status !== "succeeded" || again.status !== "succeeded") return { ok: false, error: `statuses ${run.status}, ${again.status}` };
      return { ok: true, runId: run.id, status: again.status };
    } catch (e) {
      return { ok: false, error: `${e?.code ?? e?.name}: ${e?.message}` };
    }
  };
  return {
    userAgent: navigator.userAgent,
    gc: typeof globalThis.gc === "function",
    preciseMemory: !!performance.memory,
  };
}

// --- Mock control, pass-through, helpers -------------------------------------------------------

async function control(serverUrl, path, init = {}) {
  const response = await fetch(`${serverUrl}${path}`, { ...init, headers: { "content-type": "application/json", ...init.headers } });
  const text = await response.text();
  if (!response.ok) throw new Error(`mock ${init.method ?? "GET"} ${path}: HTTP ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** The soak's page; `/soak/...` goes to the scenario `route` names last; all else to `target`. */
async function startPassThrough(target) {
  let base = null;
  const pass = await startSharedPassThrough(target, (req, res) => {
    if (req.url === "/__soak/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", connection: "close" });
      res.end("<!doctype html><meta charset=utf-8><title>soak</title>");
      return true;
    }
    if (req.url === "/soak" || req.url.startsWith("/soak/")) {
      if (!base) {
        res.writeHead(503, { connection: "close" });
        res.end();
        return true;
      }
      return base + req.url.slice("/soak".length);
    }
    return undefined;
  });
  return {
    ...pass,
    route: (scenarioBase) => {
      base = scenarioBase;
    },
  };
}

/** The codes of README "Errors" (the documented ones). */
function documentedCodes() {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("### Errors"), readme.indexOf("## Why a proxy"));
  const codes = new Set([...section.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]));
  if (codes.size < 10) throw new Error(`README "Errors": found only ${codes.size} codes`);
  return codes;
}

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}: expected a non-negative integer, got ${raw}`);
  return n;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
