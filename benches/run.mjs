// `make bench`: size, start-up, per-run overhead, concurrency, memory, waiting, local images and the
// proxy's cost, for runflow-kontext next to its peers and a hand-written fetch loop. Starts the dev
// server (embedded mock) on a free port, drives Debian's Chromium headless, writes target/bench/report.{md,json}
// and prints the summary table that the README's Benchmarks section holds.
//
// BENCH_QUICK=1 shrinks every count, for working on the benchmarks themselves. BENCH_ONLY=waiting
// runs only the waiting part (polling and push, issue 13; about 45 s) and writes
// target/bench/waiting.{md,json} instead of the full report.
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { sizes } from "./size.mjs";
import { Bench, stats } from "./browser.mjs";
import { simulateWaiting } from "./waiting.mjs";
import { benchProxy, proxyCost, renderProxyServer } from "./proxy.mjs";
import { benchMany, renderMany } from "./many.mjs";
import { benchTabs, renderTabs } from "./tabs.mjs";
import { freePort } from "../tests/e2e/harness.mjs";
import { render, renderWaiting, summaryTable, waitingTable } from "./report.mjs";

const root = new URL("../", import.meta.url).pathname;
const quick = process.env.BENCH_QUICK === "1";
const only = process.env.BENCH_ONLY ?? "";
if (only && only !== "waiting") throw new Error(`BENCH_ONLY=${only}: only "waiting" is a part of its own`);
const log = (...a) => console.error(`[bench ${((performance.now() / 1000) | 0).toString().padStart(3)}s]`, ...a);

const CONFIG = {
  startupLoads: quick ? 5 : 50,
  overhead: { n: quick ? 100 : 500, warmup: quick ? 20 : 50, pollIntervalMs: 1 },
  memory: { checkpoints: quick ? [10, 200] : [10, 500, 1000, 2000], pollIntervalMs: 1 },
  concurrency: { n: 200, lifecycles: [[0, 0, 0], [200, 200, 600]], pollIntervalMs: quick ? 50 : 50 },
  // Every strategy's runs at once; the events ones (issue 13) 4 to a browser context.
  waiting: { durations: [5000, 10000, 30000], exact: quick ? 2 : 4, spread: quick ? 4 : 8, eventsPerPage: 4 },
  proxy: { n: quick ? 300 : 2000, concurrency: 32, ms: quick ? 1000 : 3000 },
  proxyServer: { n: quick ? 300 : 1000, warmup: 50, concurrency: 32, count: quick ? 1000 : 3000, rounds: quick ? 1 : 3 },
  images: { bytes: 10 * 1024 * 1024, n: quick ? 5 : 20, warmup: quick ? 1 : 3 },
  // runMany (issue 14): 50 runs of 2 s, 4 at a time.
  many: { runs: quick ? 12 : 50, concurrency: 4, runMs: 2000 },
  // One poller per run across tabs (issue 14): 3 tabs on the same runs against 1.
  tabs: { runs: quick ? 2 : 6, runMs: 5000 },
};

// What the dev server serves at `/` during the bench: pages written for a browser that no
// DevTools client is attached to. Its pages are cross-origin isolated, for 5 µs timers instead of
// 100 µs ones (a run on loopback takes about 3 ms).
const wwwDir = await mkdtemp(join(tmpdir(), "bench-www-"));

// The waiting bench's dev server has the callback relay on (issue 13): the mock delivers each
// run's callback, signed with this secret, to the server's own receiver, which pushes it down
// the run's stream. The other benches keep a server without it: there, a client that saw the
// relay advertised would give later runs the relay's callback_url and wait by push.
const RELAY_SECRET = "whsec_bench_relay";

function startDevServer(extraEnv = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(root + "target/release/devserver", [], { cwd: root, env: { ...process.env, PORT: "0", WWW_DIR: wwwDir, CROSS_ORIGIN_ISOLATED: "1", ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const onData = (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:\d+/);
      if (m) resolve({ child, origin: m[0] });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`dev server exited (${code}): ${out}`)));
    setTimeout(() => reject(new Error(`dev server did not start in 20 s: ${out}`)), 20_000);
  });
}

async function startRelayServer() {
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  const started = await startDevServer({ PORT: String(port), PUBLIC_URL: publicUrl, RUNFLOW_CALLBACK_SECRETS: RELAY_SECRET });
  // The banner may name another address first; the relay's receiver is at PUBLIC_URL.
  return { ...started, origin: publicUrl };
}

const started = Date.now();
const servers = [];
process.on("exit", () => {
  for (const s of servers) if (s.exitCode === null) s.kill("SIGTERM");
  rmSync(wwwDir, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));
const stopServers = () => servers.forEach((s) => s.exitCode === null && s.kill("SIGTERM"));
const { child: server, origin } = await startDevServer();
servers.push(server);
const { child: relayServer, origin: relayOrigin } = await startRelayServer();
servers.push(relayServer);
log(`dev server at ${origin}; with the callback relay on (waiting bench) at ${relayOrigin}`);
const relay = { origin: relayOrigin, secret: RELAY_SECRET };

if (only === "waiting") {
  const report = { generatedAt: new Date().toISOString(), part: "waiting", config: { waiting: CONFIG.waiting }, machine: { cores: cpus().length, cpu: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version } };
  const bench = new Bench(origin, wwwDir, log);
  try {
    await bench.start();
    report.machine.browser = await bench.env();
    log("waiting: 5 s, 10 s, 30 s runs: events (the relay), ours polling, fixed 500 ms and 2 s loops, all in parallel");
    report.waiting = await bench.waiting(CONFIG.waiting, relay);
  } finally {
    await bench.stop();
    stopServers();
  }
  report.elapsedSeconds = Math.round((Date.now() - started) / 1000);
  await mkdir(root + "target/bench", { recursive: true });
  await writeFile(root + "target/bench/waiting.json", JSON.stringify(report, null, 2) + "\n");
  await writeFile(root + "target/bench/waiting.md", `# runflow-kontext benchmarks: waiting only\n\nGenerated ${report.generatedAt} by \`BENCH_ONLY=waiting node benches/run.mjs\` in ${report.elapsedSeconds} s.\n\n${renderWaiting(report)}`);
  log(`wrote target/bench/waiting.md and waiting.json in ${report.elapsedSeconds} s`);
  console.log(waitingTable(report));
  process.exit(0);
}

const report = { generatedAt: new Date().toISOString(), config: CONFIG, machine: { cores: cpus().length, cpu: cpus()[0]?.model, memoryBytes: totalmem(), node: process.version } };
const bench = new Bench(origin, wwwDir, log);
try {
  log("size: bundling ours and the peers, twiggy breakdown");
  report.size = await sizes();
  log(`proxy: ${CONFIG.proxy.n} sequential GETs each way, then ${CONFIG.proxy.concurrency} in flight`);
  report.proxy = await proxyCost(CONFIG.proxy);
  log(`proxy (issue 12): the mock, runflow-kontext/server on node:http, the Rust proxy; ${CONFIG.proxyServer.n} sequential GETs each, then ${CONFIG.proxyServer.concurrency} in flight`);
  report.proxyServer = await benchProxy(CONFIG.proxyServer);
  await bench.start();
  report.machine.browser = await bench.env();
  log(`start-up: ${CONFIG.startupLoads} cold + ${CONFIG.startupLoads} warm loads`);
  report.startup = await bench.startup(CONFIG.startupLoads);
  log(`overhead: ${CONFIG.overhead.n} + ${CONFIG.overhead.warmup} warm-up cycles per side, interleaved, in a Chromium without DevTools`);
  report.overhead = await bench.overhead(CONFIG.overhead);
  log("overhead again, in a Playwright page (a DevTools client recording the network)");
  report.overheadDevTools = await bench.overhead({ ...CONFIG.overhead, attached: true });
  log(`memory: ${CONFIG.memory.checkpoints.join(", ")} sequential runs per side`);
  report.memory = await bench.memory(CONFIG.memory);
  log(`concurrency: ${CONFIG.concurrency.n} runs in flight`);
  report.concurrency = await bench.concurrency(CONFIG.concurrency);
  log("waiting: 5 s, 10 s, 30 s runs: events (the relay), ours polling, fixed 500 ms and 2 s loops, all in parallel");
  report.waiting = await bench.waiting(CONFIG.waiting, relay);
  // The same comparison computed from the schedules, over many run lengths, with the measured latency.
  // The waiting runs are in Playwright pages: the latency measured there.
  const getLatencyMs = report.overheadDevTools.floorMs.median / 2;
  report.waiting.simulated = simulateWaiting({ durations: CONFIG.waiting.durations, latencyMs: getLatencyMs });
  log(`images: a ${CONFIG.images.bytes / 2 ** 20} MiB file to an image_url, ours inline, FileReader, ours uploaded; ${CONFIG.images.n} + ${CONFIG.images.warmup} warm-up rounds, interleaved`);
  report.images = await bench.images(CONFIG.images);
  log(`many: runMany of ${CONFIG.many.runs} runs of ${CONFIG.many.runMs / 1000} s at concurrency ${CONFIG.many.concurrency}`);
  report.many = await benchMany(CONFIG.many);
  log(`tabs: ${CONFIG.tabs.runs} runs of ${CONFIG.tabs.runMs / 1000} s waited on by 1 tab, then 3`);
  report.tabs = await benchTabs(CONFIG.tabs);
} finally {
  await bench.stop();
  stopServers();
}
report.elapsedSeconds = Math.round((Date.now() - started) / 1000);

await mkdir(root + "target/bench", { recursive: true });
await writeFile(root + "target/bench/report.json", JSON.stringify(report, null, 2) + "\n");
const rendered = render(report);
// The server entry's proxy (issue 12), before the machine section.
const proxyServerMd = renderProxyServer(report.proxyServer);
const extraMd = `${proxyServerMd}\n${renderMany(report.many)}\n${renderTabs(report.tabs)}`;
const md = rendered.includes("## Machine") ? rendered.replace("## Machine", `${extraMd}\n## Machine`) : `${rendered}\n${extraMd}`;
await writeFile(root + "target/bench/report.md", md);
log(`wrote target/bench/report.md and report.json in ${report.elapsedSeconds} s`);
console.log(summaryTable(report));
