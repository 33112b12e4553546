// The fault matrix (issue 11): every cell of tests/matrix/cells.json run in headless Chromium
// against a dev server of its own, each on a fresh mock scenario. The expectations are data;
// this file only runs them and compares. See docs/reliability.md (rendered from the same data).

import assert from "node:assert/strict";
import net from "node:net";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, normalize } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { encodePng, launchBrowser, startPassThrough as startSharedPassThrough, startServer } from "../e2e/harness.mjs";
import { DOC_PATH, cellName, describeExpect, loadCells, render, skipReason } from "./render.mjs";

// MATRIX_VERBOSE=1 prints every cell's outcome; MATRIX_ONLY=<substring> runs the matching cells
// only; MATRIX_PKG_DIR=<dir> serves /pkg/ from another build of the package (an older client).
const CONCURRENCY = Number(process.env.MATRIX_CONCURRENCY ?? 4);
const PKG_DIR = process.env.MATRIX_PKG_DIR;
/** A cell still unsettled after this long is reported as hung. */
const CELL_LIMIT_MS = 45_000;
/** Offline cells: how long the context stays offline once the wait has polled. */
const OFFLINE_MS = 1_500;
const MODEL_PATH = "/v1/models/black-forest-labs/flux-pro/kontext/runs";
/** Create attempts whose outcome the client cannot know: a look-up must come before the next POST. */
const UNKNOWN_FAULTS = new Set(["drop", "create_then_drop", "create_then_hang", "hang", "delay", "raw", "truncate", "huge", "create_then_error"]);

const data = loadCells();
const session = {};

before(async () => {
  session.server = await startServer({ MOCK_LIFECYCLE_MS: "50,50,100" });
  session.pass = await startPassThrough(session.server.url);
  session.closedPort = await closedPort();
  session.browser = await launchBrowser();
  session.context = await session.browser.newContext();
  session.page = await session.context.newPage();
  session.problems = [];
  session.inFlight = new Set();
  const problem = (text) => {
    session.problems.push(text);
    for (const cell of session.inFlight) cell.problems.push(text);
  };
  session.page.on("pageerror", (error) => problem(`pageerror: ${error.message}`));
  session.page.on("console", (message) => {
    const text = message.text();
    // Chromium logs every failed request by itself; the matrix provokes them on purpose.
    if (/Failed to load resource|net::ERR_/.test(text)) return;
    if (message.type() === "error" || /RuntimeError|unreachable|panicked/.test(text)) problem(`console.${message.type()}: ${text}`);
  });
  await session.page.goto(`${session.pass.url}/__matrix/`);
  session.features = await session.page.evaluate(pageSetup, data.client);
});

after(async () => {
  await session.browser?.close();
  await session.pass?.stop();
  await session.server?.stop();
});

test("docs/reliability.md is rendered from tests/matrix/cells.json", () => {
  assert.equal(readFileSync(DOC_PATH, "utf8"), render(data), "docs/reliability.md is out of date: run `node tests/matrix/render.mjs`");
});

test("every cell is well formed", () => {
  const seen = new Set();
  for (const cell of data.cells) {
    const name = cellName(cell);
    assert.ok(data.operations[cell.op], `${name}: unknown operation`);
    assert.ok(data.faults[cell.fault], `${name}: unknown fault`);
    assert.ok(data.upstreams[cell.upstream], `${name}: unknown upstream`);
    assert.ok(!seen.has(name), `${name}: listed twice`);
    seen.add(name);
    if (cell.na) continue;
    const e = cell.expect;
    assert.ok(e && (e.resolves !== undefined) !== (e.rejects !== undefined), `${name}: expect resolves or rejects`);
    assert.equal(typeof e.runs, "number", `${name}: expect.runs`);
    assert.equal(typeof e.creates, "number", `${name}: expect.creates`);
    if (e.rejects) assert.equal(typeof e.rejects.code, "string", `${name}: expect.rejects.code`);
    if (cell.known) assert.match(cell.known, /^issue 11 defect \d+/, `${name}: known must name the defect`);
  }
});

test("the fault matrix", { timeout: 600_000 }, async () => {
  const started = Date.now();
  const only = process.env.MATRIX_ONLY;
  const runnable = data.cells.filter((cell) => !skipReason(data, cell) && (!only || cellName(cell).includes(only)));
  const shared = runnable.filter((cell) => cell.fault !== "offline");
  // Offline is a property of the whole browser context: those cells run alone, at the end.
  const alone = runnable.filter((cell) => cell.fault === "offline");
  const results = new Map();
  let next = 0;
  const worker = async () => {
    while (next < shared.length) {
      const cell = shared[next++];
      results.set(cell, await runCell(cell));
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  for (const cell of alone) results.set(cell, await runCell(cell));

  const passed = [];
  const failed = [];
  const knownFailing = [];
  const knownPassing = [];
  for (const cell of runnable) {
    const { failures } = results.get(cell);
    if (failures.length === 0) (cell.known ? knownPassing : passed).push(cell);
    else (cell.known ? knownFailing : failed).push(cell);
  }
  const report = (cell) => {
    const r = results.get(cell);
    return [
      `  ✘ ${cellName(cell)}${cell.known ? ` [${cell.known}]` : ""}`,
      `      expected: ${describeExpect(cell.op, cell.expect)}`,
      `      actual:   ${r.actual}`,
      ...r.failures.map((f) => `      - ${f}`),
    ].join("\n");
  };
  const skipped = data.cells.map((cell) => skipReason(data, cell)).filter(Boolean);
  const lines = [];
  if (!session.features.fast) {
    lines.push(`matrix: the client has no retryBaseMs/retryMaxMs yet (${session.features.fastError}); cells ran with the default 1 s backoff`);
  }
  lines.push(
    `matrix: ${data.cells.length} cells: ${runnable.length} run, ${skipped.filter((s) => s.kind === "na").length} not applicable, ` +
      `${skipped.filter((s) => s.kind === "pending").length} pending; ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
  if (knownFailing.length) lines.push(`matrix: ${knownFailing.length} known failures (not counted):`, ...knownFailing.map(report));
  if (knownPassing.length) lines.push(`matrix: marked known but now passing (remove the mark): ${knownPassing.map(cellName).join(", ")}`);
  if (process.env.MATRIX_VERBOSE) {
    for (const cell of runnable) lines.push(`  ${results.get(cell).failures.length ? "✘" : "✔"} ${cellName(cell)}: ${results.get(cell).actual}`);
  }
  if (failed.length) lines.push("matrix: failed cells:", ...failed.map(report));
  lines.push(`matrix: ${passed.length} passed, ${failed.length} failed`);
  console.log(lines.join("\n"));
  assert.equal(failed.length, 0, `${failed.length} cells failed:\n${failed.map(report).join("\n")}`);
});

// --- One cell --------------------------------------------------------------------------------

async function runCell(cell) {
  const state = { problems: [] };
  const failures = [];
  let actual = "not run";
  session.inFlight.add(state);
  try {
    const outcome = await withLimit(runCellSteps(cell, failures), CELL_LIMIT_MS, `no outcome after ${CELL_LIMIT_MS / 1000} s (hung)`);
    actual = outcome.actual;
  } catch (error) {
    failures.push(`harness: ${error.message}`);
    actual = `harness error: ${error.message}`;
  } finally {
    session.inFlight.delete(state);
  }
  for (const problem of state.problems) failures.push(`page problem while this cell ran: ${problem}`);
  return { failures, actual };
}

async function runCellSteps(cell, failures) {
  const operation = data.operations[cell.op];
  const upstream = data.upstreams[cell.upstream];
  const key = `${cellName(cell)}#${Math.random().toString(36).slice(2)}`;
  const mock = await createScenario({ ...operation.scenario, ...upstream.scenario, ...cell.scenario });
  const runId = operation.needsRun ? await mock.createRun() : undefined;
  // An older run with the client_ref the call is about to reuse (and another input).
  const staleRunId = cell.setup === "stale_run" ? await mock.createRun({ client_ref: cell.call.clientRef, input: { prompt: "an earlier edit that used the same client_ref", image_url: IMAGE_URL } }) : undefined;
  const baseline = (await mock.log()).length;
  if (cell.rules) await mock.addFaults(fill(cell.rules));
  const refused = cell.fault === "refused" && !cell.rules?.length;
  const args = {
    key,
    op: cell.op,
    runId,
    baseUrl: refused ? `http://127.0.0.1:${session.closedPort}${mock.base}` : mock.base,
    client: { maxRetries: data.client.maxRetries, ...operation.client, ...cell.client },
    call: { ...operation.call, ...cell.call },
    image: IMAGE,
    imageUrl: IMAGE_URL,
    prompt: PROMPT,
  };

  let result;
  if (cell.fault === "offline") {
    const pending = session.page.evaluate(pageRun, args);
    const polled = await until(async () => (await mock.log()).slice(baseline).some((e) => e.kind === "get"), 5_000);
    if (!polled) failures.push("harness: the wait never polled before going offline");
    await session.context.setOffline(true);
    await sleep(OFFLINE_MS);
    await session.context.setOffline(false);
    const onlineAt = Date.now();
    result = await pending;
    if (result.settledAt < onlineAt) failures.push(`settled ${onlineAt - result.settledAt} ms before the browser was back online`);
  } else {
    result = await session.page.evaluate(pageRun, args);
  }
  const log = (await mock.log()).slice(baseline);
  const runs = await mock.runs();
  const creates = log.filter((e) => e.kind === "create");
  const actual = [
    result.resolved ? `resolves ${result.value?.status ? `\`${result.value.status}\`` : JSON.stringify(result.value)}` : `rejects ${describeError(result.error)}`,
    `${runs.length} run${runs.length === 1 ? "" : "s"}`,
    `${creates.length} POST${creates.length === 1 ? "" : "s"}`,
    `log: ${log.map(logWord).join(" ") || "(empty)"}`,
    `${Math.round(result.ms)} ms`,
  ].join(" · ");

  compareOutcome(cell.expect, result, runId, failures);
  if (runs.length !== cell.expect.runs) failures.push(`runs held by the mock: expected ${cell.expect.runs}, got ${runs.length}`);
  if (creates.length !== cell.expect.creates) failures.push(`create POSTs: expected ${cell.expect.creates}, got ${creates.length}`);
  failures.push(...lookupBeforeRepost(log), ...oneLogicalCreate(log, result));
  if (cell.expect.minMs !== undefined && result.ms < cell.expect.minMs) {
    failures.push(`took ${Math.round(result.ms)} ms: Retry-After asked for at least ${cell.expect.minMs} ms`);
  }
  if (cell.expect.maxMs !== undefined && result.ms > cell.expect.maxMs) {
    failures.push(`took ${Math.round(result.ms)} ms: expected to settle within ${cell.expect.maxMs} ms`);
  }
  const searches = log.filter((e) => e.kind === "search").length;
  if (cell.expect.searches !== undefined && searches !== cell.expect.searches) {
    failures.push(`look-ups: expected ${cell.expect.searches}, got ${searches}`);
  }
  if (cell.expect.newRun && result.resolved && result.value?.id === staleRunId) {
    failures.push(`resolved with the older run ${staleRunId} that reused the client_ref, not a run of this call`);
  }
  if (cell.expect.offlineAttempts !== undefined) {
    const offline = result.offlineFetches;
    if (offline > cell.expect.offlineAttempts) failures.push(`requests started while offline: expected at most ${cell.expect.offlineAttempts}, got ${offline}`);
  }

  // The same client (or, where its baseUrl is dead by construction, a fresh one) must work next.
  const nextArgs = { ...args, fresh: cell.fault === "refused", baseUrl: mock.base };
  const nextResult = await session.page.evaluate(pageNext, nextArgs);
  if (!nextResult.resolved) failures.push(`the next clean call failed: ${describeError(nextResult.error)}`);
  return { actual };
}

function compareOutcome(expect, result, runId, failures) {
  if (expect.resolves !== undefined) {
    if (!result.resolved) {
      failures.push(`expected to resolve, rejected ${describeError(result.error)}`);
      return;
    }
    if (expect.resolves === "url") {
      if (typeof result.value !== "string" || !/^https?:\/\//.test(result.value)) failures.push(`expected an asset URL, got ${JSON.stringify(result.value)}`);
    } else if (result.value?.status !== expect.resolves) {
      failures.push(`expected a run with status ${expect.resolves}, got ${JSON.stringify(result.value)}`);
    }
    return;
  }
  const want = expect.rejects;
  if (result.resolved) {
    failures.push(`expected to reject with ${want.code}, resolved ${JSON.stringify(result.value)}`);
    return;
  }
  const error = result.error;
  if (!error.isRunflowError) failures.push(`not a RunflowError: ${error.name}: ${error.message}`);
  if (error.code !== want.code) failures.push(`code: expected ${want.code}, got ${error.code}`);
  for (const field of ["status", "retryable", "step", "retryAfterMs"]) {
    if (want[field] !== undefined && error[field] !== want[field]) {
      failures.push(`${field}: expected ${JSON.stringify(want[field])}, got ${JSON.stringify(error[field])}`);
    }
  }
  if (want.clientRef === true && !(typeof error.clientRef === "string" && error.clientRef)) failures.push("clientRef: expected it set, got none");
  if (want.clientRef === false && error.clientRef != null) failures.push(`clientRef: expected none, got ${JSON.stringify(error.clientRef)}`);
  if (want.runId && error.runId !== runId) failures.push(`runId: expected ${runId}, got ${JSON.stringify(error.runId)}`);
}

/**
 * One logical create: every POST carries the same client_ref and (where the mock sees one) the
 * same Idempotency-Key, every look-up searches that client_ref, and an error's clientRef is it.
 */
function oneLogicalCreate(log, result) {
  const problems = [];
  const creates = log.filter((e) => e.kind === "create");
  const refs = new Set(creates.map((e) => e.body?.client_ref));
  const keys = new Set(creates.map((e) => e.headers?.["idempotency-key"]).filter(Boolean));
  if (refs.size > 1) problems.push(`the create POSTs carried ${refs.size} client_refs: ${[...refs].join(", ")}`);
  if (keys.size > 1) problems.push(`the create POSTs carried ${keys.size} Idempotency-Keys`);
  const [ref] = refs;
  if (typeof ref === "string") {
    for (const search of log.filter((e) => e.kind === "search")) {
      const q = new URLSearchParams(search.query ?? "").get("q") ?? "";
      if (!q.includes(ref)) problems.push(`look-up #${search.seq} searched ${JSON.stringify(q)}, not client_ref ${ref}`);
    }
    const clientRef = result.resolved ? null : result.error?.clientRef;
    if (clientRef != null && clientRef !== ref) problems.push(`error.clientRef ${clientRef} is not the client_ref sent (${ref})`);
  }
  return problems;
}

/** After a create attempt whose outcome was unknown, the run must be looked up before any new POST. */
function lookupBeforeRepost(log) {
  const problems = [];
  let unknownSince = null;
  for (const entry of log) {
    if (entry.kind === "search") unknownSince = null;
    if (entry.kind !== "create") continue;
    if (unknownSince !== null) problems.push(`create #${entry.seq} POSTed after the unknown outcome of #${unknownSince} with no look-up in between`);
    const unknown = UNKNOWN_FAULTS.has(entry.fault) || entry.status == null || entry.status === 408 || (entry.status >= 500 && entry.status !== 503);
    unknownSince = unknown ? entry.seq : null;
  }
  return problems;
}

function describeError(error) {
  if (!error) return "(nothing)";
  const details = ["status", "retryable", "clientRef", "runId", "step", "retryAfterMs"]
    .filter((k) => error[k] != null)
    .map((k) => `${k}: ${JSON.stringify(error[k])}`);
  const kind = error.isRunflowError ? error.code : `${error.name} (not a RunflowError)`;
  return `${kind} {${details.join(", ")}} "${String(error.message).slice(0, 160)}"`;
}

const logWord = (e) => `${e.kind}${e.fault ? `(${e.fault})` : ""}:${e.status ?? "—"}`;

// --- The page side (serialised into the page by page.evaluate) -------------------------------

/** Loads the package once, counts the client's fetches, and detects the fast-retry options. */
async function pageSetup(retryOptions) {
  const mod = await import("/pkg/runflow_kontext.js");
  await mod.default();
  const state = { mod, fetches: [], clients: new Map(), fast: false, retryOptions };
  window.__matrix = state;
  const realFetch = window.fetch.bind(window);
  window.fetch = (input, init) => {
    state.fetches.push({ url: String(input?.url ?? input), online: navigator.onLine });
    return realFetch(input, init);
  };
  window.addEventListener("unhandledrejection", (event) => {
    console.error(`[matrix] unhandledrejection: ${event.reason?.stack ?? event.reason}`);
  });
  const { maxRetries, ...fast } = retryOptions;
  try {
    new mod.KontextClient(fast);
    state.fast = true;
  } catch (error) {
    state.fastError = `${error.code}: ${error.message}`;
  }
  state.invoke = (client, { op, runId, call, image, imageUrl, prompt }) => {
    const input = { prompt, image_url: imageUrl };
    switch (op) {
      case "create":
      case "lookup":
        return client.createRun(input, call);
      case "get":
        return client.getRun(runId, call);
      case "wait":
        return client.waitForRun(runId, call);
      default:
        return client.uploadImage(new Uint8Array(image), call);
    }
  };
  state.client = (args) => {
    const { maxRetries, ...fast } = state.retryOptions;
    return new mod.KontextClient({ baseUrl: args.baseUrl, ...args.client, ...(state.fast ? fast : {}) });
  };
  state.settle = async (promise) => {
    const started = performance.now();
    try {
      const value = await promise;
      const shown = typeof value === "string" ? value : { id: value?.id, status: value?.status, status_code: value?.status_code };
      return { resolved: true, value: shown, ms: performance.now() - started, settledAt: Date.now() };
    } catch (e) {
      const error = { isRunflowError: e instanceof mod.RunflowError, name: e?.name, message: String(e?.message ?? e) };
      for (const k of ["code", "status", "runId", "clientRef", "retryable", "retryAfterMs", "step"]) error[k] = e?.[k] ?? null;
      return { resolved: false, error, ms: performance.now() - started, settledAt: Date.now() };
    }
  };
  return { fast: state.fast, fastError: state.fastError };
}

/** The faulted call, with a fresh client kept for the next call. */
async function pageRun(args) {
  const state = window.__matrix;
  const before = state.fetches.length;
  let client;
  try {
    client = state.client(args);
  } catch (e) {
    return state.settle(Promise.reject(e));
  }
  state.clients.set(args.key, client);
  const result = await state.settle(state.invoke(client, args));
  result.offlineFetches = state.fetches.slice(before).filter((f) => !f.online && f.url.includes(args.baseUrl)).length;
  return result;
}

/** One clean call of the same kind after the faulted one (a get for a wait: faults may remain). */
async function pageNext(args) {
  const state = window.__matrix;
  try {
    const client = args.fresh ? state.client(args) : state.clients.get(args.key);
    const op = args.op === "wait" ? "get" : args.op;
    return await state.settle(state.invoke(client, { ...args, op, call: {} }));
  } catch (e) {
    return state.settle(Promise.reject(e));
  } finally {
    state.clients.delete(args.key);
  }
}

// --- Mock, pass-through, helpers ---------------------------------------------------------------

const PNG = encodePng(4, 4, (x, y) => [x * 60, y * 60, 120]);
const IMAGE = [...PNG];
const PROMPT = "a matrix cell";
/** Runs are made from an inline picture: the mock renders its output from it (no network). */
const IMAGE_URL = `data:image/png;base64,${PNG.toString("base64")}`;

async function control(path, init = {}) {
  const response = await fetch(`${session.server.url}${path}`, {
    ...init,
    headers: { "content-type": "application/json", ...init.headers },
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`mock ${init.method ?? "GET"} ${path}: HTTP ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function createScenario(config) {
  const { base_url: base } = await control("/__mock/scenarios", { method: "POST", body: JSON.stringify(config) });
  return {
    base,
    log: async () => (await control(`${base}/log`)).requests,
    runs: async () => (await control(`${base}/runs`)).items,
    addFaults: (rules) => control(`${base}/faults`, { method: "POST", body: JSON.stringify(rules) }),
    async createRun(fields = {}) {
      const body = { input: { prompt: "made before the cell", image_url: IMAGE_URL }, client_ref: "matrix-before", ...fields };
      const run = await control(`${base}${MODEL_PATH}`, { method: "POST", body: JSON.stringify(body) });
      return run.id;
    },
  };
}

/** Placeholders in fault rules, filled in as the cell starts. */
function fill(rules) {
  return JSON.parse(JSON.stringify(rules), (_key, value) => {
    if (typeof value !== "string") return value;
    return value
      .replaceAll("$CLOSED_PORT", String(session.closedPort))
      .replaceAll("$HTTP_DATE_IN_2S", new Date(Date.now() + 2_000).toUTCString());
  });
}

/** A port nothing listens on: bound, then released. */
function closedPort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The matrix's page and, with MATRIX_PKG_DIR, another build at /pkg/; all else goes to `target`. */
function startPassThrough(target) {
  return startSharedPassThrough(target, (req, res) => {
    if (req.url === "/__matrix/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", connection: "close" });
      res.end("<!doctype html><meta charset=utf-8><title>fault matrix</title>");
      return true;
    }
    if (PKG_DIR && req.url.startsWith("/pkg/")) {
      const file = join(PKG_DIR, normalize(decodeURIComponent(req.url.slice(5).split("?")[0])).replace(/^(\.\.[/\\])+/, ""));
      const type = file.endsWith(".wasm") ? "application/wasm" : "text/javascript";
      readFile(file).then(
        (bytes) => {
          res.writeHead(200, { "content-type": type, connection: "close" });
          res.end(bytes);
        },
        () => {
          res.writeHead(404, { connection: "close" });
          res.end();
        },
      );
      return true;
    }
    return undefined;
  });
}

async function until(check, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await sleep(20);
  }
  return false;
}

function withLimit(promise, ms, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
