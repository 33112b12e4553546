// Browser half of `make bench`: headless Chromium (Debian's) driven by playwright-core against
// the dev server's mock. Each measurement runs in a fresh page of a same-origin document, with
// the in-page code (harness.js + floor.js) bundled to an IIFE and injected.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { rmSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { build } from "esbuild";

const here = new URL("./", import.meta.url).pathname;

export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-quic",
  // Measurement switches: real heap sizes (not bucketed) and a callable gc().
  "--enable-precise-memory-info", "--js-flags=--expose-gc",
  // Timers in a page nobody looks at must not be throttled while we time them.
  "--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
];

const PKG = "/pkg/runflow_kontext.js";

// Browsers started without Playwright, and their profiles: gone with the bench even when it is
// stopped by a signal (run.mjs exits on SIGINT and SIGTERM, which skips `finally` blocks).
const started = new Map();
process.on("exit", () => {
  for (const [browser, profile] of started) {
    browser.kill("SIGKILL");
    rmSync(profile, { recursive: true, force: true });
  }
});

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  return { n: s.length, min: s[0], median: q(0.5), p95: q(0.95), max: s[s.length - 1], mean: s.reduce((a, b) => a + b, 0) / s.length };
};

export class Bench {
  /** `wwwDir`: the folder the dev server serves at `/`, where pages for a browser without a
   * DevTools client are written. */
  constructor(origin, wwwDir, log = console.error) {
    this.origin = origin;
    this.wwwDir = wwwDir;
    this.log = log;
  }

  async start() {
    this.browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS });
    const bundle = await build({ entryPoints: [here + "harness.js"], bundle: true, format: "iife", write: false, logLevel: "silent", target: "es2022" });
    this.harness = bundle.outputFiles[0].text;
    this.context = await this.browser.newContext();
  }

  async stop() {
    await this.browser?.close();
  }

  /** A fresh page on the dev server's origin with the harness loaded. */
  async page(context = this.context, origin = this.origin) {
    const page = await context.newPage();
    page.on("pageerror", (e) => this.log(`page error: ${e.message}`));
    // Any same-origin document will do (an empty 404 would become an error page): the glue as text.
    await page.goto(`${origin}/pkg/runflow_kontext.js`);
    await page.addScriptTag({ content: this.harness });
    return page;
  }

  async scenario(config, origin = this.origin) {
    const res = await fetch(`${origin}/__mock/scenarios`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(config) });
    if (res.status !== 201) throw new Error(`scenario: HTTP ${res.status} ${await res.text()}`);
    const { base_url } = await res.json();
    const base = origin + base_url;
    return {
      base,
      log: async () => (await (await fetch(`${base}/log`)).json()).requests,
      runs: async () => (await (await fetch(`${base}/runs`)).json()).items,
      callbacks: async () => (await (await fetch(`${base}/callbacks`)).json()).attempts,
    };
  }

  async env() {
    const page = await this.page();
    const env = await page.evaluate(() => bench.env());
    env.browserVersion = this.browser.version();
    await page.close();
    return env;
  }

  /** Start-up: import -> init() -> new KontextClient, `n` times in fresh pages. `cold`: a new
   * browser context (empty HTTP and code caches) per load; warm: one context, its caches kept. */
  async startup(n) {
    const out = {};
    for (const mode of ["cold", "warm"]) {
      const samples = [];
      const warmContext = mode === "warm" ? await this.browser.newContext() : null;
      for (let i = 0; i < n; i++) {
        const context = warmContext ?? (await this.browser.newContext());
        const page = await this.page(context);
        samples.push(await page.evaluate((url) => bench.startup(url), PKG));
        await page.close();
        if (!warmContext) await context.close();
      }
      await warmContext?.close();
      out[mode] = {
        totalMs: stats(samples.map((s) => s.totalMs)),
        importMs: stats(samples.map((s) => s.importMs)),
        initMs: stats(samples.map((s) => s.initMs)),
        clientMs: stats(samples.map((s) => s.clientMs)),
        exportsMemory: samples.every((s) => s.hasMemory),
      };
    }
    return out;
  }

  /** Per-run overhead, ours vs the floor, interleaved in one page, each side in its own scenario.
   * `attached`: in a Playwright page, that is with a DevTools client recording the network;
   * otherwise in a Chromium that no DevTools client is attached to, as users' pages run. */
  async overhead({ n, warmup, pollIntervalMs, attached }) {
    const [ours, floor] = [await this.scenario({ lifecycle_ms: [0, 0, 0] }), await this.scenario({ lifecycle_ms: [0, 0, 0] })];
    const args = { url: PKG, ours: ours.base, floor: floor.base, n, warmup, pollIntervalMs };
    let times;
    if (attached) {
      const page = await this.page();
      times = await page.evaluate((args) => bench.overhead(args), args);
      await page.close();
    } else {
      times = await this.unattached("bench.overhead", args);
    }
    // The two sides must have sent the same requests: same kinds, counts, headers and body keys.
    const shape = (log) => {
      const kinds = {};
      for (const r of log) kinds[`${r.method} ${r.kind}`] = (kinds[`${r.method} ${r.kind}`] ?? 0) + 1;
      const create = log.find((r) => r.kind === "create");
      const get = log.find((r) => r.kind === "get");
      return {
        kinds,
        createHeaders: Object.keys(create?.headers ?? {}).sort(),
        getHeaders: Object.keys(get?.headers ?? {}).sort(),
        createBodyKeys: Object.keys(create?.body ?? {}).sort(),
        inputKeys: Object.keys(create?.body?.input ?? {}).sort(),
      };
    };
    const requests = { ours: shape(await ours.log()), floor: shape(await floor.log()) };
    const o = stats(times.ours), f = stats(times.floor);
    const pairRatios = times.ours.map((t, i) => t / times.floor[i]);
    return {
      n, warmup, pollIntervalMs, devTools: !!attached,
      oursMs: o, floorMs: f,
      ratio: { median: o.median / f.median, p95: o.p95 / f.p95, mean: o.mean / f.mean, pairedMedian: stats(pairRatios).median },
      perRunOverheadMs: { median: o.median - f.median, p95: o.p95 - f.p95 },
      requests,
      sameRequests: JSON.stringify(requests.ours) === JSON.stringify(requests.floor),
    };
  }

  /** Calls `fn(args)` of the harness in a Chromium started without any DevTools client: a page
   * the dev server serves from `wwwDir`, same-origin with the mock, posts the result to a
   * loopback server of ours. Playwright's DevTools session records the network, and for that
   * Chromium captures every request's initiator stack trace, a per-request cost that users'
   * pages do not pay. */
  async unattached(fn, args) {
    let settle;
    const result = new Promise((resolve, reject) => (settle = { resolve, reject }));
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        res.writeHead(204, { "access-control-allow-origin": "*" }).end();
        try {
          const message = JSON.parse(body);
          if (message.error) settle.reject(new Error(`page: ${message.error}`));
          else settle.resolve(message.value);
        } catch (error) {
          settle.reject(error);
        }
      });
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const reportUrl = `http://127.0.0.1:${server.address().port}/`;
    await writeFile(join(this.wwwDir, "harness.js"), this.harness);
    await writeFile(
      join(this.wwwDir, "unattached.html"),
      `<!doctype html><meta charset="utf-8"><script src="/harness.js"></script><script type="module">
const post = (message) => fetch(${JSON.stringify(reportUrl)}, { method: "POST", body: JSON.stringify(message) });
addEventListener("error", (e) => post({ error: e.message }));
addEventListener("unhandledrejection", (e) => post({ error: String(e.reason?.stack ?? e.reason) }));
${fn}(${JSON.stringify(args)}).then((value) => post({ value }), (e) => post({ error: String(e?.stack ?? e) }));
</script>`,
    );
    const profile = await mkdtemp(join(tmpdir(), "bench-chromium-"));
    const browser = spawn("/usr/bin/chromium", [...CHROMIUM_ARGS, `--user-data-dir=${profile}`, `${this.origin}/unattached.html`], { stdio: "ignore" });
    started.set(browser, profile);
    browser.once("error", (error) => settle.reject(error));
    browser.once("exit", (code, signal) => settle.reject(new Error(`${fn}: Chromium exited (${signal ?? code}) before the page reported`)));
    const timeout = setTimeout(() => settle.reject(new Error(`${fn}: no result in 10 min`)), 600_000);
    try {
      return await result;
    } finally {
      clearTimeout(timeout);
      if (browser.exitCode === null) {
        const exited = new Promise((resolve) => browser.once("exit", resolve));
        browser.kill("SIGKILL");
        await exited;
      }
      server.close();
      started.delete(browser);
      await rm(profile, { recursive: true, force: true });
    }
  }

  /** Memory after 10 ... 2000 sequential runs, in a fresh page per side. */
  async memory({ checkpoints, pollIntervalMs }) {
    const out = {};
    for (const side of ["ours", "floor"]) {
      const s = await this.scenario({ lifecycle_ms: [0, 0, 0] });
      const page = await this.page();
      out[side] = await page.evaluate((args) => bench.memory(args), { url: PKG, base: s.base, checkpoints, pollIntervalMs, side });
      await page.close();
    }
    const at = (side, runs) => out[side].find((p) => p.runs === runs);
    const first = checkpoints[0], last = checkpoints[checkpoints.length - 1];
    return {
      points: out,
      growth: {
        from: first, to: last,
        oursWasmBytes: at("ours", last).wasmBytes - at("ours", first).wasmBytes,
        oursJsHeapBytes: at("ours", last).jsHeapBytes - at("ours", first).jsHeapBytes,
        floorJsHeapBytes: at("floor", last).jsHeapBytes - at("floor", first).jsHeapBytes,
      },
    };
  }

  /** `n` runs in flight at once, ours and the floor, for each lifecycle. */
  async concurrency({ n, lifecycles, pollIntervalMs }) {
    const out = [];
    for (const lifecycle of lifecycles) {
      const row = { lifecycle_ms: lifecycle, pollIntervalMs };
      for (const side of ["ours", "floor"]) {
        const s = await this.scenario({ lifecycle_ms: lifecycle });
        const page = await this.page();
        row[side] = await page.evaluate((args) => bench.concurrency(args), { url: PKG, base: s.base, n, pollIntervalMs, side });
        const log = await s.log();
        row[side].requests = log.length;
        row[side].gets = log.filter((r) => r.kind === "get").length;
        await page.close();
      }
      row.wallRatio = row.ours.wallMs / row.floor.wallMs;
      out.push(row);
    }
    return out;
  }

  /** A `bytes` file to an `image_url`: our data: URI, FileReader's, our upload; one page, interleaved. */
  async images({ bytes, n, warmup }) {
    const s = await this.scenario({});
    const page = await this.page();
    const r = await page.evaluate((args) => bench.images(args), { url: PKG, base: s.base, bytes, n, warmup });
    await page.close();
    const requests = {};
    for (const e of await s.log()) requests[`${e.method} ${e.kind}`] = (requests[`${e.method} ${e.kind}`] ?? 0) + 1;
    const ms = Object.fromEntries(Object.entries(r.times).map(([k, v]) => [k, stats(v)]));
    const ratio = (a, b) => ({ median: ms[a].median / ms[b].median, p95: ms[a].p95 / ms[b].p95, pairedMedian: stats(r.times[a].map((t, i) => t / r.times[b][i])).median });
    return {
      bytes: r.fileBytes, n, warmup, ms,
      firstReadMs: { wasm: stats(r.firstRead.wasm), fileReader: stats(r.firstRead.fileReader) },
      ratio: { wasmToFileReader: ratio("wasm", "fileReader"), uploadToFileReader: ratio("upload", "fileReader") },
      check: r.check, progressCalls: r.progressCalls, requests,
      // Wasm memory never shrinks: after the last data: URI is the peak.
      memory: { before: r.before, afterFirstWasmBytes: r.afterFirst, after: r.after },
    };
  }

  /** Waiting: runs of `durations` (exact, and spread +-1 s around them), each strategy, all at once.
   * `relay` (`{ origin, secret }`): a dev server with the callback relay on; then every waiting run
   * goes to it, and the `events` strategy (issue 13) runs beside the polling ones: our client with
   * `wait: "events"`, its runs in scenarios that sign callbacks with the relay's secret and carry
   * the relay's receiver as `callback_url`. Each open stream holds one of Chromium's 6 connections
   * per host for the whole run, so the events runs go `eventsPerPage` to a browser context of
   * their own (each context has its own connection pool), not into the polling runs' page. */
  async waiting({ durations, exact, spread, eventsPerPage = 4 }, relay) {
    const origin = relay?.origin ?? this.origin;
    let relayInfo = null;
    if (relay) {
      relayInfo = (await (await fetch(`${origin}/api/runflow/_backend`)).json()).relay;
      if (!relayInfo?.on) throw new Error(`waiting: the dev server at ${origin} has no relay on: ${JSON.stringify(relayInfo)}`);
    }
    const strategies = ["ours", "fixed500", "fixed2000", ...(relay ? ["events"] : [])];
    const jobs = [];
    const scenarios = new Map();
    for (const duration of durations) {
      for (const strategy of strategies) {
        const lengths = [
          ...Array.from({ length: exact }, () => ({ kind: "exact", ms: duration })),
          // Stratified over a 2 s window, so a fixed loop's phase at completion is spread evenly.
          ...Array.from({ length: spread }, (_, i) => ({ kind: "spread", ms: Math.round(duration - 1000 + (2000 * (i + 0.5)) / spread) })),
        ];
        for (const { kind, ms } of lengths) {
          // queued, dispatching, running: 10 %, 10 %, 80 % of the run.
          const lifecycle = [Math.round(ms * 0.1), Math.round(ms * 0.1), ms - 2 * Math.round(ms * 0.1)];
          const events = strategy === "events";
          const s = await this.scenario({ lifecycle_ms: lifecycle, ...(events ? { callback_secrets: [relay.secret] } : {}) }, origin);
          const key = `${jobs.length}`;
          scenarios.set(key, s);
          jobs.push({ key, duration, kind, runMs: ms, strategy, base: s.base, startDelayMs: (jobs.length * 619) % 2000, ...(events ? { callbackUrl: relayInfo.callback } : {}) });
        }
      }
    }
    const polled = jobs.filter((j) => j.strategy !== "events");
    const pushed = jobs.filter((j) => j.strategy === "events");
    const groups = [];
    for (let i = 0; i < pushed.length; i += eventsPerPage) groups.push(pushed.slice(i, i + eventsPerPage));
    const page = await this.page(this.context, origin);
    const contexts = await Promise.all(groups.map(() => this.browser.newContext()));
    const eventPages = await Promise.all(contexts.map((c) => this.page(c, origin)));
    const t0 = Date.now();
    const [main, ...others] = await Promise.all([
      page.evaluate((args) => bench.waiting(args), { url: PKG, jobs: polled }),
      ...eventPages.map((p, i) => p.evaluate((args) => bench.waiting(args), { url: PKG, jobs: groups[i] })),
    ]);
    const wallMs = Date.now() - t0;
    await page.close();
    await Promise.all(contexts.map((c) => c.close()));
    const results = [...main.results, ...others.flatMap((o) => o.results)];
    const visibility = main.visibility;
    const parseTime = (s) => {
      // RFC 3339 with microseconds: keep the milliseconds Date.parse reads, add the rest.
      const m = s.match(/^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$/);
      if (!m) return Date.parse(s);
      const frac = (m[2] + "000000").slice(0, 6);
      return Date.parse(`${m[1]}.${frac.slice(0, 3)}${m[3]}`) + Number(frac.slice(3)) / 1000;
    };
    const rows = [];
    for (const r of results) {
      const s = scenarios.get(r.key);
      const [run] = await s.runs();
      const log = await s.log();
      // The run's end: the mock's `completed_at` (created_at + the lifecycle, to the microsecond).
      const endedAt = run?.completed_at ? parseTime(run.completed_at) : NaN;
      const row = {
        duration: r.duration, kind: r.kind, runMs: r.runMs, strategy: r.strategy, status: r.status,
        gets: log.filter((e) => e.kind === "get").length,
        delayMs: r.resolvedAt - endedAt,
      };
      if (r.strategy === "events") {
        // The callback's first attempt (ms since the epoch, the mock's clock): the delay in two parts.
        const [attempt] = await s.callbacks();
        row.ways = r.ways;
        row.pushed = r.ways?.length === 1 && r.ways[0] === "events";
        row.callback = attempt ? { status: attempt.status, delivered: attempt.delivered, elapsedMs: attempt.elapsed_ms } : null;
        if (attempt) {
          row.endToCallbackMs = attempt.at_ms - endedAt;
          row.callbackToResolveMs = r.resolvedAt - attempt.at_ms;
        }
      }
      if (r.error) row.error = r.error;
      rows.push(row);
    }
    const summary = [];
    for (const duration of durations) {
      for (const kind of ["exact", "spread"]) {
        for (const strategy of strategies) {
          const sel = rows.filter((r) => r.duration === duration && r.kind === kind && r.strategy === strategy);
          if (!sel.length) continue;
          summary.push({ duration, kind, strategy, runs: sel.length, gets: stats(sel.map((r) => r.gets)), delayMs: stats(sel.map((r) => r.delayMs).filter(Number.isFinite)) });
        }
      }
    }
    // Issue 13: events against our polling, per duration, exact and spread lengths together.
    let events = null;
    if (relay) {
      events = { eventsPerPage, pages: groups.length, relay: relayInfo, byDuration: [] };
      for (const duration of durations) {
        const side = (strategy) => {
          const sel = rows.filter((r) => r.duration === duration && r.strategy === strategy);
          const out = { runs: sel.length, ok: sel.filter((r) => r.status === "succeeded").length, errors: sel.filter((r) => r.error).map((r) => r.error), gets: stats(sel.map((r) => r.gets)), delayMs: stats(sel.map((r) => r.delayMs).filter(Number.isFinite)) };
          if (strategy === "events") {
            out.pushed = sel.filter((r) => r.pushed).length;
            out.delivered = sel.filter((r) => r.callback?.delivered).length;
            const split = sel.filter((r) => r.endToCallbackMs !== undefined);
            if (split.length) {
              out.endToCallbackMs = stats(split.map((r) => r.endToCallbackMs));
              out.callbackToResolveMs = stats(split.map((r) => r.callbackToResolveMs));
            }
          }
          return out;
        };
        events.byDuration.push({ duration, events: side("events"), polling: side("ours") });
      }
      const all = rows.filter((r) => r.strategy === "events");
      const delays = stats(all.map((r) => r.delayMs).filter(Number.isFinite));
      const gets = stats(all.map((r) => r.gets));
      events.goal = {
        oneGetPerRun: all.every((r) => r.gets === 1 && r.status === "succeeded"),
        meanGets: gets.mean,
        medianDelayMs: delays.median,
        p95DelayMs: delays.p95,
        medianUnder50: delays.median < 50,
        perDurationMedianUnder50: events.byDuration.every((d) => d.events.delayMs.median < 50),
      };
      events.goal.met = events.goal.oneGetPerRun && events.goal.perDurationMedianUnder50;
    }
    return { wallMs, visibility, rows, summary, ...(events ? { events } : {}) };
  }
}

export { stats };
