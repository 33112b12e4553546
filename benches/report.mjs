// Turns the measurements into target/bench/report.md and the README's summary table.

import { readFileSync } from "node:fs";

/** The budget `make size` holds (the Makefile's SIZE_BUDGET), in gzip bytes. */
const SIZE_BUDGET = Number(readFileSync(new URL("../Makefile", import.meta.url), "utf8").match(/^SIZE_BUDGET \?= (\d+)$/m)[1]);

const kb = (n) => `${(n / 1000).toFixed(1)} KB`;
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
const mib = (n) => `${+(n / 2 ** 20).toFixed(1)} MiB`;
const ms = (n, d = 1) => `${n.toFixed(d)} ms`;
const x = (n) => `${n.toFixed(2)}x`;
const pct = (n) => `${(n * 100).toFixed(1)} %`;
const signed = (n) => `${n >= 0 ? "+" : "−"}${Math.abs(n).toLocaleString("en")} B`;
const table = (head, rows) => [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");

const STRATEGY = { ours: "ours (0.5 s, x1.5, cap 5 s)", fixed500: "fixed 500 ms (fal, replicate)", fixed2000: "fixed 2 s (Runflow SDK)", events: "ours, wait: \"events\" (callback relay)" };

/** Issue 13's targets: one GET per run by push, and a median delay under 50 ms (each duration). */
export function eventsTargets(r) {
  const e = r.waiting.events;
  if (!e) return [];
  const by = e.byDuration;
  return [
    { target: "wait: \"events\": 1 GET per run", value: by.map((d) => `${d.duration / 1000} s: ${d.events.gets.mean.toFixed(2)} mean (${d.events.gets.min}–${d.events.gets.max}), ${d.events.pushed}/${d.events.runs} pushed`).join("; ") + `; polling: ${by.map((d) => d.polling.gets.mean.toFixed(1)).join(", ")}`, met: e.goal.oneGetPerRun },
    { target: "wait: \"events\": median run end → promise delay < 50 ms", value: by.map((d) => `${d.duration / 1000} s: ${ms(d.events.delayMs.median)} (p95 ${ms(d.events.delayMs.p95)})`).join("; ") + `; polling: ${by.map((d) => ms(d.polling.delayMs.median, 0)).join(", ")}`, met: e.goal.perDurationMedianUnder50 },
  ];
}

/** Events against our polling, per duration (issue 13): a table, and the targets under it. */
export function waitingTable(r) {
  const e = r.waiting.events;
  if (!e) return "";
  const rows = e.byDuration.flatMap((d) => [
    [`${d.duration / 1000} s`, STRATEGY.events, `${d.events.ok}/${d.events.runs}`, d.events.gets.mean.toFixed(2), `${d.events.gets.min}–${d.events.gets.max}`, ms(d.events.delayMs.median), ms(d.events.delayMs.p95), ms(d.events.delayMs.max)],
    [`${d.duration / 1000} s`, STRATEGY.ours, `${d.polling.ok}/${d.polling.runs}`, d.polling.gets.mean.toFixed(2), `${d.polling.gets.min}–${d.polling.gets.max}`, ms(d.polling.delayMs.median), ms(d.polling.delayMs.p95), ms(d.polling.delayMs.max)],
  ]);
  return [
    table(["run", "waiting", "runs ok", "GETs per run, mean", "GETs min–max", "delay median", "delay p95", "delay max"], rows),
    "",
    table(["target (issue 13)", "measured", "met"], eventsTargets(r).map((t) => [t.target, t.value, t.met ? "yes" : "**no**"])),
  ].join("\n");
}

export function targets(r) {
  const ours = r.size.bundles[0];
  const fal = r.size.bundles.find((b) => b.name === "@fal-ai/client");
  const w10 = (strategy, kind = "exact") => r.waiting.summary.find((s) => s.duration === 10000 && s.kind === kind && s.strategy === strategy);
  const m = r.memory.growth;
  const pts = r.memory.points.ours;
  const [a, b] = pts.slice(-2);
  const tail = { runs: b.runs - a.runs, bytes: b.jsHeapBytes - a.jsHeapBytes };
  return [
    { target: "Per-run overhead <= 1.10x the fetch loop (median)", value: `${x(r.overhead.ratio.median)} median, ${x(r.overhead.ratio.p95)} p95 (with a DevTools client recording the network: ${x(r.overheadDevTools.ratio.median)} median)`, met: r.overhead.ratio.median <= 1.1 },
    { target: "wasm memory after 2,000 runs within 64 KB of after 10", value: signed(m.oursWasmBytes), met: Math.abs(m.oursWasmBytes) <= 65536 },
    { target: "JS heap after 2,000 runs within 64 KB of after 10", value: `${signed(m.oursJsHeapBytes)} (fetch loop: ${signed(m.floorJsHeapBytes)}); last ${tail.runs} runs: ${signed(tail.bytes)}`, met: Math.abs(m.oursJsHeapBytes) <= 65536 },
    { target: "10 s runs: fewer GETs than fixed 500 ms", value: `${w10("ours").gets.median} vs ${w10("fixed500").gets.median}`, met: w10("ours").gets.median < w10("fixed500").gets.median },
    { target: "10 s runs: median completion delay < 500 ms", value: `${ms(w10("ours").delayMs.median, 0)} (runs of exactly 10 s); ${ms(w10("ours", "spread").delayMs.median, 0)} for 9–11 s runs`, met: w10("ours").delayMs.median < 500 },
    { target: `Size <= ${kb(SIZE_BUDGET)} gzip (.wasm + JS as shipped; 60 KB until issue 13)`, value: `${kb(ours.total.gzip)} for one import + run, ${kb(r.size.makeSize.total.gzip)} with every export (make size)`, met: ours.total.gzip <= SIZE_BUDGET && r.size.makeSize.total.gzip <= SIZE_BUDGET },
    { target: `Plan to get under @fal-ai/client (${kb(fal.total.gzip)})`, value: "written below", met: true },
  ];
}

export function summaryTable(r) {
  const b = Object.fromEntries(r.size.bundles.map((p) => [p.name, p]));
  const ours = r.size.bundles[0];
  const w = (d, s, kind = "exact") => r.waiting.summary.find((e) => e.duration === d && e.kind === kind && e.strategy === s);
  const c0 = r.concurrency[0];
  const c1 = r.concurrency[1];
  const env = r.machine.browser;
  const lines = [];
  lines.push(`Measured by \`make bench\` on ${r.machine.cores} cores (${r.machine.cpu}), headless Chromium ${env.browserVersion}, Node ${r.machine.node}, against the dev server's mock on loopback.`);
  lines.push("");
  lines.push(
    table(
      ["what", "runflow-kontext", "peers / floor"],
      [
        ["size, gzip (brotli), one import + one run call, esbuild --bundle --minify", `**${kb(ours.total.gzip)}** (${kb(ours.total.brotli)}): wasm ${kb(ours.parts[1].gzip)} + JS ${kb(ours.parts[0].gzip)}`, `@fal-ai/client ${kb(b["@fal-ai/client"].total.gzip)} (${kb(b["@fal-ai/client"].total.brotli)}), replicate ${kb(b.replicate.total.gzip)} (${kb(b.replicate.total.brotli)}), openai ${kb(b.openai.total.gzip)} (${kb(b.openai.total.brotli)}), fetch loop ${kb(b["hand-written fetch loop (floor)"].total.gzip)} (${kb(b["hand-written fetch loop (floor)"].total.brotli)})`],
        ["start-up: import → init() → new KontextClient, median of " + r.startup.cold.totalMs.n, `${ms(r.startup.cold.totalMs.median)} cold cache, ${ms(r.startup.warm.totalMs.median)} warm (init alone ${ms(r.startup.cold.initMs.median)} / ${ms(r.startup.warm.initMs.median)})`, "—"],
        [`per-run overhead: ${r.overhead.n} create + get-until-done cycles, zero latency, interleaved`, `median ${ms(r.overhead.oursMs.median, 2)}, p95 ${ms(r.overhead.oursMs.p95, 2)}: **${x(r.overhead.ratio.median)}** median, **${x(r.overhead.ratio.p95)}** p95; with a DevTools client recording the network (Playwright): ${x(r.overheadDevTools.ratio.median)} median, ${x(r.overheadDevTools.ratio.p95)} p95`, `fetch loop: median ${ms(r.overhead.floorMs.median, 2)}, p95 ${ms(r.overhead.floorMs.p95, 2)} (with DevTools: ${ms(r.overheadDevTools.floorMs.median, 2)}, ${ms(r.overheadDevTools.floorMs.p95, 2)})`],
        [`concurrency: ${c0.ours.n} runs in flight, zero latency`, `${ms(c0.ours.wallMs, 0)} wall, wasm memory ${kib(c0.ours.before.wasmBytes)} → peak ${kib(c0.ours.peak.wasmBytes)}`, `fetch loop ${ms(c0.floor.wallMs, 0)}`],
        [`concurrency: ${c1.ours.n} runs of ${c1.lifecycle_ms.reduce((a, b) => a + b, 0) / 1000} s in flight, polled from ${c1.pollIntervalMs} ms`, `${ms(c1.ours.wallMs, 0)} wall, peak wasm memory ${kib(c1.ours.peak.wasmBytes)}, ${c1.ours.gets} GETs`, `fetch loop ${ms(c1.floor.wallMs, 0)}, ${c1.floor.gets} GETs`],
        ["memory after 10 → 2,000 sequential runs (after GC)", `wasm ${signed(r.memory.growth.oursWasmBytes)}, JS heap ${signed(r.memory.growth.oursJsHeapBytes)}`, `fetch loop JS heap ${signed(r.memory.growth.floorJsHeapBytes)}`],
        [
          `proxy (issue 5): ${r.proxy.n} sequential GETs each way, keep-alive, interleaved; then ${r.proxy.throughput.concurrency} in flight for ${r.proxy.throughput.seconds} s`,
          `through the proxy: p50 ${ms(r.proxy.latencyMs.proxied.p50, 2)}, p99 ${ms(r.proxy.latencyMs.proxied.p99, 2)} (**${x(r.proxy.ratio.p50)}** p50, **${x(r.proxy.ratio.p99)}** p99; +${ms(r.proxy.addedMs.p50, 2)} p50); ${Math.round(r.proxy.throughput.proxiedPerSec)} req/s`,
          `straight to the mock: p50 ${ms(r.proxy.latencyMs.direct.p50, 2)}, p99 ${ms(r.proxy.latencyMs.direct.p99, 2)}; ${Math.round(r.proxy.throughput.directPerSec)} req/s`,
        ],
        [
          `local image (issue 4), ${mib(r.images.bytes)} File → \`data:\` URI, ${r.images.n} rounds interleaved: median (p95)`,
          `ours, base64 in wasm: ${ms(r.images.ms.wasm.median)} (${ms(r.images.ms.wasm.p95)}): **${x(r.images.ratio.wasmToFileReader.median)}** median, **${x(r.images.ratio.wasmToFileReader.p95)}** p95, then ${ms(r.images.firstReadMs.wasm.median)} at the first read (V8 flattens the joined string); wasm memory ${kib(r.images.memory.before.wasmBytes)} → ${kib(r.images.memory.afterFirstWasmBytes)} after the first, ${signed(r.images.memory.after.wasmBytes - r.images.memory.afterFirstWasmBytes)} over the next ${r.images.n + r.images.warmup - 1}`,
          `FileReader.readAsDataURL: ${ms(r.images.ms.fileReader.median)} (${ms(r.images.ms.fileReader.p95)})`,
        ],
        [
          `local image, ${mib(r.images.bytes)} File → uploaded asset (create, PUT, confirm on the mock), same rounds`,
          `ours, \`uploadThreshold: 0\`: ${ms(r.images.ms.upload.median)} (${ms(r.images.ms.upload.p95)}): **${x(r.images.ratio.uploadToFileReader.median)}** median, **${x(r.images.ratio.uploadToFileReader.p95)}** p95 of FileReader's data: URI`,
          "—",
        ],
        ...[5000, 10000, 30000].map((d) => [
          `waiting, ${d / 1000} s runs: GETs per run, completion → resolution delay (median)`,
          `${w(d, "ours").gets.median} GETs, ${ms(w(d, "ours").delayMs.median, 0)} (9–11 s spread: ${w(d, "ours", "spread").gets.median} GETs, ${ms(w(d, "ours", "spread").delayMs.median, 0)})`.replace("9–11", `${d / 1000 - 1}–${d / 1000 + 1}`),
          `fixed 500 ms: ${w(d, "fixed500").gets.median} GETs, ${ms(w(d, "fixed500", "spread").delayMs.median, 0)}; fixed 2 s: ${w(d, "fixed2000").gets.median} GETs, ${ms(w(d, "fixed2000", "spread").delayMs.median, 0)} (spread runs)`,
        ]),
        ...(r.waiting.events?.byDuration ?? []).map((e) => [
          `waiting by push (issue 13), ${e.duration / 1000} s runs (${e.events.runs} each way, ${e.duration / 1000 - 1}–${e.duration / 1000 + 1} s): GETs per run (mean), run end → promise delay median (p95)`,
          `\`wait: "events"\`: **${e.events.gets.mean.toFixed(2)} GETs**, **${ms(e.events.delayMs.median)}** (${ms(e.events.delayMs.p95)})`,
          `ours polling: ${e.polling.gets.mean.toFixed(1)} GETs, ${ms(e.polling.delayMs.median, 0)} (${ms(e.polling.delayMs.p95, 0)})`,
        ]),
      ],
    ),
  );
  lines.push("");
  lines.push(table(["target (issue 7)", "measured", "met"], targets(r).map((t) => [t.target, t.value, t.met ? "yes" : "**no**"])));
  if (r.waiting.events) {
    lines.push("");
    lines.push(table(["target (issue 13)", "measured", "met"], eventsTargets(r).map((t) => [t.target, t.value, t.met ? "yes" : "**no**"])));
  }
  return lines.join("\n");
}

export function plan(r) {
  const ours = r.size.bundles[0];
  const fal = r.size.bundles.find((b) => b.name === "@fal-ai/client");
  const t = r.size.twiggy;
  const ratio = ours.parts[1].gzip / ours.parts[1].bytes; // gzip bytes per wasm byte, on average
  const g = Object.fromEntries(t.groups.map((x) => [x.name.split(" (")[0], x.bytes]));
  const est = (raw) => Math.round(raw * ratio);
  const gap = ours.total.gzip - fal.total.gzip;
  const rows = [
    ["1. `verifyCallbackSignature` out of the browser build: done in issue 11 (it is in the Node entry's server build, cargo feature `server`)", `browser wasm now ${kb(t.rebuiltStripped.gzip)} gzip, no HMAC code`, "done (−3.3 KB)"],
    ["2. No `core::fmt`: done in our code (`src/text.rs`, messages joined from parts); what is left is std's panic handler, which only nightly's `panic_immediate_abort` removes", `formatting ${kb(g["formatting"])} raw`, `≈ −${kb(est(g["formatting"]))}`],
    ["3. No `str::pattern`: done in our code (byte-level checks, `get(..)` instead of slicing); what is left comes from dependencies", `string searching ${kb(g["string searching and slicing panics"])} raw`, `≈ −${kb(est(g["string searching and slicing panics"]))}`],
    ["4. The async edge as JS: the race of each request against its timer and the caller's signal, and the sleeps, are done (`exchange` and `sleep` in `js/edge.js`, −3.6 KB); next, the create/retry/wait/upload loops as plain JS async functions calling synchronous wasm exports for the decisions (policy, error mapping, normalisation), removing the remaining Rust state machines and `wasm-bindgen-futures`; adds ≈ 1.5 KB gzip of JS", `async edge ${kb(g["async edge"])} raw`, `≈ −${kb(Math.max(0, est(g["async edge"]) - 1500))}`],
    ["5. Error messages and validation texts as one table in JS keyed by code (they are sent to JS anyway): no duplicated fragments, `.rodata` shrinks to the field tables", `data segments ${kb(g["data segments"])} raw`, `≈ −${kb(Math.round(est(g["data segments"]) * 0.4))} (net of the JS table)`],
    ["6. A bump allocator that frees all at the end of each call (calls are short) instead of talc", `allocator ${kb(g["allocator"])} raw`, `≈ −${kb(Math.round(est(g["allocator"]) * 0.7))}`],
  ];
  const savings = est(g["formatting"]) + est(g["string searching and slicing panics"]) + Math.max(0, est(g["async edge"]) - 1500) + Math.round(est(g["data segments"]) * 0.4) + Math.round(est(g["allocator"]) * 0.7);
  const after = ours.total.gzip - savings;
  const rest = t.groups[t.groups.length - 1].bytes;
  return [
    `Now: **${kb(ours.total.gzip)}** gzip (wasm ${kb(ours.parts[1].gzip)} + JS ${kb(ours.parts[0].gzip)}); @fal-ai/client: ${kb(fal.total.gzip)}; the gap is ${kb(gap)}.`,
    `Estimates convert twiggy's raw bytes at the module's average ${ratio.toFixed(2)} gzip bytes per byte; step 1 is measured (the export removed from the module, then the same \`wasm-opt -Oz\`).`,
    "",
    table(["step", "what it removes (raw wasm)", "gzip saved"], rows),
    "",
    `Steps 1–6 together: ≈ −${kb(savings)} → **≈ ${kb(after)}**${after <= fal.total.gzip ? ", under" : ", still over"} @fal-ai/client's ${kb(fal.total.gzip)}. ` +
      `${after <= fal.total.gzip ? "" : "Step 4 is the one that matters: the async edge is the largest group, and the rest of the module is mostly our own synchronous logic (validation, normalisation, error mapping). "}` +
      `Steps 2, 3 and 6 keep the architecture and are worth ≈ ${kb(est(g["formatting"]) + est(g["string searching and slicing panics"]) + Math.round(est(g["allocator"]) * 0.7))}; they alone do not get under ${kb(fal.total.gzip)}.`,
    "",
    `What is left after steps 1–6 is our synchronous core (${kb(rest)} raw, ≈ ${kb(est(rest))} gzip: validation, output and status normalisation, error mapping) and the JS bridge it needs (${kb(g["JS bridge"])} raw, ≈ ${kb(est(g["JS bridge"]))} gzip). ` +
      `${after <= fal.total.gzip ? "" : `The wasm route therefore bottoms out around ${kb(after)}. Step 7 gets under ${kb(fal.total.gzip)}: `}` +
      `7. Ship the client as JavaScript and keep Rust where it pays: the core's tables (error codes, statuses, input fields and ranges, messages) are generated from the Rust definitions into the JS build (as the TS unions already are), the native tests become shared JSON fixtures both run, and the wasm module goes away (−${kb(ours.parts[1].gzip)} of wasm, −${kb(ours.parts[0].gzip)} of glue). ` +
      `Sized from the peers measured here: replicate does create + poll + typed errors in ${kb(r.size.bundles.find((b) => b.name === "replicate").total.gzip)}; the same job plus our validation, normalisation, no-duplicate create, Retry-After and abort/deadline handling is estimated at 10–12 KB gzip, about half of @fal-ai/client.`,
  ].join("\n");
}

/** The waiting section: measured runs, the events comparison (issue 13), the simulation. */
export function renderWaiting(r) {
  const out = [];
  const wt = r.waiting;
  out.push("## Waiting", "", `Every run has its own mock scenario with lifecycle 10 % queued, 10 % dispatching, 80 % running, and all of them ran at once (${(wt.wallMs / 1000).toFixed(0)} s wall; the polling runs in one page, ${wt.visibility}${wt.events ? `, the pushed ones in ${wt.events.pages} more` : ""}). GETs are counted from each scenario's log; the delay is from the run's \`completed_at\` (server clock) to the moment the promise resolved (\`Date.now()\` in the page, same machine). "exact": runs of exactly 5/10/30 s; "spread": lengths spread evenly over ±1 s around them, so a fixed loop meets completion at every phase. Ours runs \`client.run()\` with the default schedule; the fixed loops are the same fetch loop with a constant interval.`, "");
  out.push(table(["run", "lengths", "strategy", "runs", "GETs median (min–max)", "delay median", "delay p95", "delay max"], wt.summary.map((s) => [`${s.duration / 1000} s`, s.kind, STRATEGY[s.strategy], s.runs, `${s.gets.median} (${s.gets.min}–${s.gets.max})`, ms(s.delayMs.median, 0), ms(s.delayMs.p95, 0), ms(s.delayMs.max, 0)])), "");
  if (wt.simulated) out.push(`Computed from the schedules (\`benches/waiting.mjs\`, ${wt.simulated[0].latencyMs.toFixed(2)} ms per request, the measured median), for a run of exactly the nominal length and for 2,000 lengths spread evenly over ±1 s:`, "");
  if (wt.simulated) out.push(table(["run", "strategy", "exact: GETs", "exact: delay", "spread: mean GETs", "spread: median delay", "spread: p95 delay", "spread: mean delay"], wt.simulated.map((s) => [`${s.duration / 1000} s`, STRATEGY[s.strategy], s.exact.gets, ms(s.exact.delayMs, 0), s.spread.meanGets.toFixed(1), ms(s.spread.medianDelayMs, 0), ms(s.spread.p95DelayMs, 0), ms(s.spread.meanDelayMs, 0)])), "");

  const e = wt.events;
  if (e) {
    const split = e.byDuration.filter((d) => d.events.endToCallbackMs);
    out.push("### Events against polling (issue 13)", "");
    out.push(`The waiting runs go to a dev server of their own with the callback relay on (\`PUBLIC_URL\` on a free port, \`RUNFLOW_CALLBACK_SECRETS\`); the other benches keep a server without it. \`wait: "events"\` runs are \`client.run(input, { wait: "events", callbackUrl })\` in scenarios created with \`callback_secrets: [the relay's secret]\`, \`callbackUrl\` being the relay's receiver (\`${e.relay.callback}\`): the mock POSTs the signed callback there when the run ends, the server pushes it down the run's stream (\`${e.relay.events}\`), and the client makes one GET, when the stream opens. Ours polling is \`client.run(input, { wait: "poll" })\` with the default schedule, the same runs as in the table above. Each open stream holds one of Chromium's 6 HTTP/1.1 connections per host for the whole run, so the events runs are in ${e.pages} browser contexts of their own (${e.eventsPerPage} runs each; a context has its own connection pool) instead of the polling runs' page; all of them ran at the same time. Exact and spread lengths together (${e.byDuration[0].events.runs} runs per duration each way). The delay is the promise's resolution (\`Date.now()\` in the page) minus the run's end: the mock's \`completed_at\`, to the microsecond (created_at plus the lifecycle; the instant the mock's callback timer is set for).`, "");
    out.push(waitingTable(r), "");
    if (split.length) {
      out.push("Where a pushed run's delay goes, from the mock's record of its callback's first attempt (`GET /__mock/s/{id}/callbacks`, `at_ms`, whole milliseconds): run end → callback sent (the mock's timer, building the payload with the output image) and callback sent → promise resolved (the receiver's signature check, the relay, the SSE event, the client's handling):", "");
      out.push(table(["run", "end → callback sent, median (p95)", "callback sent → resolved, median (p95)", "callbacks delivered", "runs by push with no fallback"], split.map((d) => [`${d.duration / 1000} s`, `${ms(d.events.endToCallbackMs.median)} (${ms(d.events.endToCallbackMs.p95)})`, `${ms(d.events.callbackToResolveMs.median)} (${ms(d.events.callbackToResolveMs.p95)})`, `${d.events.delivered}/${d.events.runs}`, `${d.events.pushed}/${d.events.runs}`])), "");
    }
    const errors = e.byDuration.flatMap((d) => [...d.events.errors, ...d.polling.errors]);
    if (errors.length) out.push(`Runs that failed: ${errors.map((m) => `\`${m}\``).join(", ")}.`, "");
  }
  return out.join("\n");
}

export function render(r) {
  const s = r.size;
  const out = [];
  out.push(`# runflow-kontext benchmarks`, "", `Generated ${r.generatedAt} by \`make bench\` in ${r.elapsedSeconds} s. Raw data: \`report.json\` beside this file.`, "");
  out.push("## Summary", "", summaryTable(r), "");

  out.push("## Size", "", "One import + one run call per package, bundled with `esbuild --bundle --minify --format=esm --platform=browser`; gzip level 9, brotli quality 11 (Node's zlib). Ours ships the bundle plus the `.wasm` it fetches.", "");
  out.push(table(["package", "version", "bytes", "gzip", "brotli"], s.bundles.map((b) => [b.name, b.version ?? "—", b.total.bytes.toLocaleString("en"), b.total.gzip.toLocaleString("en"), b.total.brotli.toLocaleString("en")])));
  out.push("", `Ours in parts: ${s.bundles[0].parts.map((p) => `${p.file} ${p.bytes.toLocaleString("en")} B, gzip ${p.gzip.toLocaleString("en")}, brotli ${p.brotli.toLocaleString("en")}`).join("; ")}. With every export (what \`make size\` holds to the budget): JS ${s.makeSize.js.gzip.toLocaleString("en")} + wasm ${s.makeSize.wasm.gzip.toLocaleString("en")} = ${s.makeSize.total.gzip.toLocaleString("en")} B gzip.`, "");

  out.push("### Where our wasm goes (twiggy)", "", `${s.twiggy.method}. Code and data ${s.twiggy.codeBytes.toLocaleString("en")} B (the shipped, stripped module is ${s.twiggy.shippedWasmBytes.toLocaleString("en")} B). Generic code is counted where it is defined: \`core::result::Result::and_then\` instantiated with our closures counts as core.`, "");
  out.push(table(["crate", "bytes", "share", "items"], s.twiggy.crates.map((c) => [c.crate, c.bytes.toLocaleString("en"), pct(c.share), c.items])));
  out.push("", "By what a size plan can act on:", "");
  out.push(table(["group", "bytes", "share"], s.twiggy.groups.map((gr) => [gr.name, gr.bytes.toLocaleString("en"), pct(gr.bytes / s.twiggy.codeBytes)])));
  out.push("", "Top functions and data:", "");
  out.push(table(["item", "bytes", "share"], s.twiggy.top.map((i) => [`\`${i.name.slice(0, 110)}\``, i.bytes.toLocaleString("en"), pct(i.share)])));
  out.push("", "Retained size of the exports (what removing one would free):", "");
  out.push(table(["export", "retained bytes"], s.twiggy.exports.filter((e) => e.retainedBytes > 200).map((e) => [e.name, e.retainedBytes.toLocaleString("en")])));
  out.push("", "### Plan: under @fal-ai/client", "", plan(r), "");

  out.push("## Start-up", "", `import → \`await init()\` → \`new KontextClient()\` in a fresh page, ${r.startup.cold.totalMs.n} loads each. Cold: a new browser context per load (empty HTTP cache, no compiled-code cache). Warm: one context kept (the dev server sends \`Cache-Control: no-cache\`, so each load revalidates).`, "");
  out.push(table(["", "total median", "p95", "import (JS) median", "init (wasm fetch + compile + instantiate) median", "new KontextClient median"], ["cold", "warm"].map((k) => [k, ms(r.startup[k].totalMs.median), ms(r.startup[k].totalMs.p95), ms(r.startup[k].importMs.median), ms(r.startup[k].initMs.median), ms(r.startup[k].clientMs.median, 2)])), "");

  out.push("## Per-run overhead", "", `${r.overhead.n} cycles per side after ${r.overhead.warmup} warm-up cycles, interleaved in one page (ours, loop, loop, ours, ...), each side in its own mock scenario with lifecycle [0, 0, 0] and \`pollIntervalMs: ${r.overhead.pollIntervalMs}\`. A cycle is \`client.run(input)\` vs the hand-written loop (\`benches/floor.js\`): one POST and GETs until terminal.`, "");
  out.push("Measured twice. First in a Chromium that no DevTools client is attached to, as users' pages run (the page posts its timings to the bench). Then in a Playwright page: Playwright's DevTools session records the network, and for that Chromium captures a stack trace of every request's initiator, which makes each request cost the page more, and more so the deeper the stack it is made from. That costs the fetch loop about 1 ms per run; ours makes each request from a fresh microtask so as not to pay it from deep in the wasm call stack.", "");
  for (const [title, o] of [["Without DevTools (the target's measure)", r.overhead], ["With a DevTools client recording the network (Playwright)", r.overheadDevTools]]) {
    out.push(`### ${title}`, "");
    out.push(table(["", "min", "median", "p95", "max", "mean"], [["ours", ...["min", "median", "p95", "max", "mean"].map((k) => ms(o.oursMs[k], 2))], ["fetch loop", ...["min", "median", "p95", "max", "mean"].map((k) => ms(o.floorMs[k], 2))], ["ratio", ...["min", "median", "p95", "max", "mean"].map((k) => x(o.oursMs[k] / o.floorMs[k]))]]));
    out.push("", `Median of the per-pair ratios: ${x(o.ratio.pairedMedian)}. Overhead per run: ${ms(o.perRunOverheadMs.median, 2)} at the median.`, "");
    out.push(`Same requests on both sides: **${o.sameRequests ? "yes" : "NO"}** (from the scenario logs: ${Object.entries(o.requests.ours.kinds).map(([k, v]) => `${v} ${k}`).join(", ")} vs ${Object.entries(o.requests.floor.kinds).map(([k, v]) => `${v} ${k}`).join(", ")}; create headers ${o.requests.ours.createHeaders.join(", ")} vs ${o.requests.floor.createHeaders.join(", ")}; body keys ${o.requests.ours.createBodyKeys.join(", ")} vs ${o.requests.floor.createBodyKeys.join(", ")}).`, "");
  }

  out.push("## Concurrency", "", "All runs started at once with `Promise.all`, one client. Chromium opens at most 6 HTTP/1.1 connections per host, so requests queue in the browser either way. Wasm memory never shrinks, so its size after the batch is its peak; the JS heap peak is sampled every 5 ms.", "");
  out.push(table(["lifecycle (ms)", "side", "runs ok", "wall", "GETs", "wasm before → peak", "JS heap before → peak → after GC"], r.concurrency.flatMap((c) => ["ours", "floor"].map((side) => [c.lifecycle_ms.join(", "), side === "ours" ? "ours" : "fetch loop", `${c[side].ok}/${c[side].n}`, ms(c[side].wallMs, 0), c[side].gets, side === "ours" ? `${kib(c[side].before.wasmBytes)} → ${kib(c[side].peak.wasmBytes)}` : "—", `${kib(c[side].before.jsHeapBytes)} → ${kib(c[side].peak.jsHeapBytes)} → ${kib(c[side].after.jsHeapBytes)}`]))), "");

  out.push("## Memory", "", "Sequential runs with one client (lifecycle [0, 0, 0]), in a fresh page per side; at each checkpoint `gc()` is called three times with turns of the event loop between (so FinalizationRegistry callbacks run), then `memory.buffer.byteLength` (the module's exported memory, as `init()` returns it) and `performance.memory.usedJSHeapSize` are read.", "");
  const pts = r.memory.points;
  out.push(table(["runs", "ours: wasm memory", "ours: JS heap", "fetch loop: JS heap"], pts.ours.map((p, i) => [p.runs, p.wasmBytes.toLocaleString("en"), p.jsHeapBytes.toLocaleString("en"), pts.floor[i].jsHeapBytes.toLocaleString("en")])));
  const g = r.memory.growth;
  out.push("", `From ${g.from} to ${g.to} runs: wasm ${signed(g.oursWasmBytes)}, JS heap ${signed(g.oursJsHeapBytes)} (${(g.oursJsHeapBytes / (g.to - g.from)).toFixed(0)} B per run); the fetch loop's JS heap ${signed(g.floorJsHeapBytes)}.`, "");

  out.push(renderWaiting(r));

  const im = r.images;
  const imRow = (name, side, read) => [name, ...["min", "median", "p95", "max"].map((k) => ms(im.ms[side][k])), read ? `${ms(im.firstReadMs[side].median)} (${ms(im.firstReadMs[side].p95)})` : "—", side === "fileReader" ? "1.00x" : `${x(im.ms[side].median / im.ms.fileReader.median)} (paired ${x(side === "wasm" ? im.ratio.wasmToFileReader.pairedMedian : im.ratio.uploadToFileReader.pairedMedian)})`];
  out.push("## Local images", "", `A ${mib(im.bytes)} \`File\` (the PNG signature, then random bytes; the client reads only the first 16 to tell the type) turned into an \`image_url\` three ways, in one page, ${im.n} rounds after ${im.warmup} warm-up rounds, the order rotating each round: ours as a \`data:\` URI (\`new KontextClient({ uploadThreshold: 11 MiB }).uploadImage(file)\`: \`arrayBuffer()\`, then base64 in wasm chunk by chunk, the pieces joined as JS strings), the browser's \`FileReader.readAsDataURL\`, and ours uploaded (\`uploadThreshold: 0\`: POST asset-uploads, PUT of the bytes by XMLHttpRequest, POST confirmations, to the mock on loopback, which keeps the bytes). The clock stops when the promise resolves. \`data:\` URIs' first read (\`charCodeAt\` in the middle, timed apart) is where V8 flattens the joined string, a cost ours defers to whoever sends it.`, "");
  out.push(table(["", "min", "median", "p95", "max", "first read median (p95)", "median vs FileReader"], [imRow("ours, data: URI (wasm)", "wasm", true), imRow("FileReader.readAsDataURL", "fileReader", true), imRow("ours, asset upload", "upload", false)]), "");
  out.push(`Same \`data:\` URI both ways: lengths equal in every round **${im.check.sameLength ? "yes" : "NO"}** (${im.check.dataUriLength.toLocaleString("en")} characters), strings identical in the first round **${im.check.sameString ? "yes" : "NO"}**. Uploads: ${Object.entries(im.requests).map(([k, v]) => `${v} ${k}`).join(", ")} in the scenario's log, ${im.check.uploadUrls} asset URLs returned, ${im.progressCalls} progress calls. Wasm memory (\`memory.buffer.byteLength\`): ${im.memory.before.wasmBytes.toLocaleString("en")} B before, ${im.memory.afterFirstWasmBytes.toLocaleString("en")} B after the first \`data:\` URI (the reusable chunk buffers), ${im.memory.after.wasmBytes.toLocaleString("en")} B after all ${im.n + im.warmup}: ${im.memory.after.wasmBytes === im.memory.afterFirstWasmBytes ? "flat" : "growing"}, against ${mib(im.bytes)} of image and ${mib(im.check.dataUriLength)} of base64 per round.`, "");

  const p = r.proxy;
  out.push("## Proxy", "", `The dev server in proxy mode (\`RUNFLOW_API_KEY\` set, rate limit off) in front of a second dev server's mock, both release builds on loopback, driven from Node's http with keep-alive (\`benches/proxy.mjs\`). ${p.n} sequential \`GET /v1/runs/{id}\` each way, interleaved and alternating which goes first; then ${p.throughput.concurrency} requests in flight for ${p.throughput.seconds} s each way. The client and both servers share the machine's cores, so throughput is a floor, not a ceiling.`, "");
  out.push(table(["path", "p50", "p99", "req/s"], [["straight to the mock", ms(p.latencyMs.direct.p50, 3), ms(p.latencyMs.direct.p99, 3), Math.round(p.throughput.directPerSec)], ["through the proxy", ms(p.latencyMs.proxied.p50, 3), ms(p.latencyMs.proxied.p99, 3), Math.round(p.throughput.proxiedPerSec)], ["ratio", x(p.ratio.p50), x(p.ratio.p99), x(p.throughput.directPerSec / p.throughput.proxiedPerSec)]]), "");

  out.push("## Machine", "", `${r.machine.cores} cores (${r.machine.cpu}), ${(r.machine.memoryBytes / 2 ** 30).toFixed(1)} GiB, Node ${r.machine.node}, Chromium ${r.machine.browser.browserVersion} headless (${r.machine.browser.userAgent}); precise memory info: ${r.machine.browser.preciseMemory}, gc(): ${r.machine.browser.gc}; pages cross-origin isolated (5 µs timers): ${r.machine.browser.crossOriginIsolated}.`, "");
  return out.join("\n");
}
