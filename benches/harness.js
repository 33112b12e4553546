// In-page half of the browser benchmarks. Bundled by esbuild into an IIFE and injected into a
// same-origin page of the dev server; the Node side (browser.mjs) calls `window.bench.*`.
import { fetchLoopRun } from "./floor.js";

// A small valid PNG, so the mock's image pipeline stays cheap and identical for both sides.
export const PNG =
  "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAbElEQVR42hXNQRUAUQhCUaMYhShGeVGIQhSizB+XXA7ODDtouIHBQ4YOM8suWm5h8ZKl+0CskDiBsIioHhx76LiDw0eO3oN/4FVf+J8h0PduzBqZ8x/bxNQPwgaFy192SGgelC0q13/CJaXlA8Z7WAFXOTbyAAAAAElFTkSuQmCC";
const INPUT = { prompt: "make it snow", image_url: PNG };

let pkg; // the package's exports
let wasm; // what init() returns: the instance's exports, `memory` included

async function load(url) {
  if (!pkg) {
    pkg = await import(url);
    wasm = await pkg.default();
  }
  return pkg;
}

const wasmBytes = () => wasm.memory.buffer.byteLength;

async function collect() {
  // Two GCs with turns of the event loop between them, so FinalizationRegistry callbacks (which
  // free wasm-side objects) run and what they release is collected too.
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await new Promise((r) => setTimeout(r, 20));
  }
  globalThis.gc?.();
}

const heap = () => performance.memory?.usedJSHeapSize ?? null;

function env() {
  return {
    userAgent: navigator.userAgent,
    visibility: document.visibilityState,
    hardwareConcurrency: navigator.hardwareConcurrency,
    preciseMemory: !!performance.memory,
    gc: typeof globalThis.gc === "function",
  };
}

/** Start-up: import + init + new KontextClient, in this (fresh) page. */
async function startup(url) {
  const t0 = performance.now();
  const mod = await import(url);
  const t1 = performance.now();
  const exports = await mod.default();
  const t2 = performance.now();
  new mod.KontextClient({ baseUrl: "/api/runflow" });
  const t3 = performance.now();
  return { importMs: t1 - t0, initMs: t2 - t1, clientMs: t3 - t2, totalMs: t3 - t0, hasMemory: exports.memory instanceof WebAssembly.Memory };
}

/** Per-run overhead: `n` create+get-until-done cycles on each side, interleaved (ABBA order). */
async function overhead({ url, ours, floor, n, warmup, pollIntervalMs }) {
  const { KontextClient } = await load(url);
  const client = new KontextClient({ baseUrl: ours, pollIntervalMs });
  const sides = {
    ours: () => client.run(INPUT),
    floor: () => fetchLoopRun(floor, INPUT, { pollIntervalMs }),
  };
  const times = { ours: [], floor: [] };
  for (let i = 0; i < warmup + n; i++) {
    const order = i % 2 === 0 ? ["ours", "floor"] : ["floor", "ours"];
    for (const side of order) {
      const t0 = performance.now();
      const run = await sides[side]();
      const dt = performance.now() - t0;
      if (run.status !== "succeeded" && run.status_code !== "succeeded") throw new Error(`${side}: ${run.status_code}`);
      if (i >= warmup) times[side].push(dt);
    }
  }
  return times;
}

/** Memory after `checkpoints` sequential runs (one client), after forced GC. */
async function memory({ url, base, checkpoints, pollIntervalMs, side }) {
  const { KontextClient } = await load(url);
  const client = new KontextClient({ baseUrl: base, pollIntervalMs });
  const one = side === "ours" ? () => client.run(INPUT) : () => fetchLoopRun(base, INPUT, { pollIntervalMs });
  await collect();
  const points = [{ runs: 0, wasmBytes: wasmBytes(), jsHeapBytes: heap() }];
  let done = 0;
  for (const at of checkpoints) {
    while (done < at) {
      await one();
      done++;
    }
    await collect();
    points.push({ runs: done, wasmBytes: wasmBytes(), jsHeapBytes: heap() });
  }
  return points;
}

/** `n` runs in flight at once; wall time and wasm memory before and after (memory never shrinks). */
async function concurrency({ url, base, n, pollIntervalMs, side }) {
  const { KontextClient } = await load(url);
  const client = new KontextClient({ baseUrl: base, pollIntervalMs });
  const one = side === "ours" ? () => client.run(INPUT) : () => fetchLoopRun(base, INPUT, { pollIntervalMs });
  await collect();
  const before = { wasmBytes: wasmBytes(), jsHeapBytes: heap() };
  let peakHeap = heap();
  const sampler = setInterval(() => (peakHeap = Math.max(peakHeap, heap())), 5);
  const t0 = performance.now();
  const runs = await Promise.all(Array.from({ length: n }, one));
  const wallMs = performance.now() - t0;
  clearInterval(sampler);
  const peak = { wasmBytes: wasmBytes(), jsHeapBytes: peakHeap };
  await collect();
  const after = { wasmBytes: wasmBytes(), jsHeapBytes: heap() };
  const ok = runs.filter((r) => (r.status ?? r.status_code) === "succeeded").length;
  return { n, ok, wallMs, before, peak, after };
}

/** Waiting: every job in parallel, each in its own scenario; when each promise resolved. */
async function waiting({ url, jobs }) {
  const { KontextClient } = await load(url);
  const results = await Promise.all(
    jobs.map(async (job) => {
      // Start times spread over 2 s: runs started in lockstep would poll in lockstep and queue
      // behind each other on Chromium's 6 connections per host, which no real page does.
      await new Promise((r) => setTimeout(r, job.startDelayMs ?? 0));
      let run;
      if (job.strategy === "ours") {
        run = await new KontextClient({ baseUrl: job.base }).run(INPUT);
      } else {
        const every = job.strategy === "fixed500" ? 500 : 2000;
        run = await fetchLoopRun(job.base, INPUT, { schedule: () => every });
      }
      return { ...job, resolvedAt: Date.now(), id: run.id, status: run.status_code };
    }),
  );
  return { results, visibility: document.visibilityState };
}

globalThis.bench = { env, startup, overhead, memory, concurrency, waiting };
