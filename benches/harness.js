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
    crossOriginIsolated: globalThis.crossOriginIsolated === true,
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
      if (job.strategy === "events") {
        // By push (issue 13): the run's callback goes to the dev server's relay, which pushes it
        // down the run's stream; `onWaiting` says which way the client went (and any fallback).
        const ways = [];
        try {
          run = await new KontextClient({ baseUrl: job.base }).run(INPUT, { wait: "events", callbackUrl: job.callbackUrl, onWaiting: (w) => ways.push(w.via) });
        } catch (error) {
          return { ...job, resolvedAt: Date.now(), ways, error: `${error.code ?? ""} ${error.message}` };
        }
        return { ...job, resolvedAt: Date.now(), id: run.id, status: run.status_code, ways };
      } else if (job.strategy === "ours") {
        // Polled with the default schedule; `wait: "poll"` so that a server advertising a relay
        // (the waiting bench's has one on) does not turn later runs into pushed ones.
        run = await new KontextClient({ baseUrl: job.base }).run(INPUT, { wait: "poll" });
      } else {
        const every = job.strategy === "fixed500" ? 500 : 2000;
        run = await fetchLoopRun(job.base, INPUT, { schedule: () => every });
      }
      return { ...job, resolvedAt: Date.now(), id: run.id, status: run.status_code };
    }),
  );
  return { results, visibility: document.visibilityState };
}

/** A `bytes`-long PNG-typed File: the PNG signature, then pseudo-random bytes (no real image;
 * the client reads only the first 16 bytes to tell the type). */
function fakePng(bytes) {
  const data = new Uint8Array(bytes);
  for (let at = 0; at < bytes; at += 65536) crypto.getRandomValues(data.subarray(at, Math.min(bytes, at + 65536)));
  data.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
  return new File([data], "bench.png", { type: "image/png" });
}

const readAsDataURL = (blob) =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });

/** One file to an `image_url` three ways, interleaved (the order rotates each round): our
 * `data:` URI (wasm), `FileReader.readAsDataURL`, and our asset upload to the mock. */
async function images({ url, base, bytes, n, warmup }) {
  const { KontextClient } = await load(url);
  const file = fakePng(bytes);
  const inline = new KontextClient({ baseUrl: base, uploadThreshold: bytes + 1024 * 1024 });
  const upload = new KontextClient({ baseUrl: base, uploadThreshold: 0 });
  let progressCalls = 0;
  const sides = {
    wasm: () => inline.uploadImage(file),
    fileReader: () => readAsDataURL(file),
    upload: () => upload.uploadImage(file, { onUploadProgress: () => progressCalls++ }),
  };
  const names = Object.keys(sides);
  await collect();
  const before = { wasmBytes: wasmBytes(), jsHeapBytes: heap() };
  const times = { wasm: [], fileReader: [], upload: [] };
  const check = { sameLength: true, sameString: null, dataUriLength: 0, uploadUrls: 0 };
  const firstRead = { wasm: [], fileReader: [] };
  const wasmAfter = []; // after each of our data: URIs
  for (let i = 0; i < warmup + n; i++) {
    const order = names.map((_, k) => names[(k + i) % names.length]);
    const out = {};
    for (const side of order) {
      // Earlier sides' 14 MB strings are collected now, not during this side's clock.
      globalThis.gc?.();
      const t0 = performance.now();
      out[side] = await sides[side]();
      const t1 = performance.now();
      if (i >= warmup) times[side].push(t1 - t0);
      if (side === "upload") continue;
      // Its first read: V8 flattens a string joined by concat (ours) here; FileReader's is flat.
      out[side].charCodeAt(out[side].length >> 1);
      if (i >= warmup) firstRead[side].push(performance.now() - t1);
      if (side === "wasm") wasmAfter.push(wasmBytes());
    }
    if (out.wasm.length !== out.fileReader.length) check.sameLength = false;
    // Outside the timings: lengths every round, the whole strings once (each is ~14 MB).
    if (i === 0) check.sameString = out.wasm === out.fileReader;
    check.dataUriLength = out.fileReader.length;
    if (/^https?:\/\//.test(out.upload)) check.uploadUrls++;
  }
  await collect();
  const after = { wasmBytes: wasmBytes(), jsHeapBytes: heap() };
  return { times, firstRead, check, progressCalls, before, afterFirst: wasmAfter[0], after, fileBytes: file.size };
}

globalThis.bench = { env, startup, overhead, memory, concurrency, waiting, images };
