// `make bench`: size, start-up, per-run overhead, concurrency, memory, waiting, local images and the
// proxy's cost, for runflow-kontext next to its peers and a hand-written fetch loop. Starts the dev
// server (embedded mock) on a free port, drives Debian's Chromium headless, writes target/bench/report.{md,json}
// and prints the summary table that the README's Benchmarks section holds.
//
// BENCH_QUICK=1 shrinks every count, for working on the benchmarks themselves.
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { sizes } from "./size.mjs";
import { Bench, stats } from "./browser.mjs";
import { simulateWaiting } from "./waiting.mjs";
import { benchProxy, proxyCost, renderProxyServer } from "./proxy.mjs";
import { render, summaryTable } from "./report.mjs";

const root = new URL("../", import.meta.url).pathname;
const quick = process.env.BENCH_QUICK === "1";
const log = (...a) => console.error(`[bench ${((performance.now() / 1000) | 0).toString().padStart(3)}s]`, ...a);

const CONFIG = {
  startupLoads: quick ? 5 : 50,
  overhead: { n: quick ? 100 : 500, warmup: quick ? 20 : 50, pollIntervalMs: 1 },
  memory: { checkpoints: quick ? [10, 200] : [10, 500, 1000, 2000], pollIntervalMs: 1 },
  concurrency: { n: 200, lifecycles: [[0, 0, 0], [200, 200, 600]], pollIntervalMs: quick ? 50 : 50 },
  waiting: { durations: [5000, 10000, 30000], exact: quick ? 2 : 4, spread: quick ? 4 : 8 },
  proxy: { n: quick ? 300 : 2000, concurrency: 32, ms: quick ? 1000 : 3000 },
  proxyServer: { n: quick ? 300 : 1000, warmup: 50, concurrency: 32, count: quick ? 1000 : 3000, rounds: quick ? 1 : 3 },
  images: { bytes: 10 * 1024 * 1024, n: quick ? 5 : 20, warmup: quick ? 1 : 3 },
};

// What the dev server serves at `/` during the bench: pages written for a browser that no
// DevTools client is attached to. Its pages are cross-origin isolated, for 5 µs timers instead of
// 100 µs ones (a run on loopback takes about 3 ms).
const wwwDir = await mkdtemp(join(tmpdir(), "bench-www-"));

function startDevServer() {
  return new Promise((resolve, reject) => {
    const child = spawn(root + "target/release/devserver", [], { cwd: root, env: { ...process.env, PORT: "0", WWW_DIR: wwwDir, CROSS_ORIGIN_ISOLATED: "1" }, stdio: ["ignore", "pipe", "pipe"] });
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

const started = Date.now();
const { child: server, origin } = await startDevServer();
const stopServer = () => server.exitCode === null && server.kill("SIGTERM");
process.on("exit", () => {
  stopServer();
  rmSync(wwwDir, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));
log(`dev server at ${origin}`);

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
  log("waiting: 5 s, 10 s, 30 s runs, ours vs fixed 500 ms and 2 s loops, all in parallel");
  report.waiting = await bench.waiting(CONFIG.waiting);
  // The same comparison computed from the schedules, over many run lengths, with the measured latency.
  // The waiting runs are in Playwright pages: the latency measured there.
  const getLatencyMs = report.overheadDevTools.floorMs.median / 2;
  report.waiting.simulated = simulateWaiting({ durations: CONFIG.waiting.durations, latencyMs: getLatencyMs });
  log(`images: a ${CONFIG.images.bytes / 2 ** 20} MiB file to an image_url, ours inline, FileReader, ours uploaded; ${CONFIG.images.n} + ${CONFIG.images.warmup} warm-up rounds, interleaved`);
  report.images = await bench.images(CONFIG.images);
} finally {
  await bench.stop();
  stopServer();
}
report.elapsedSeconds = Math.round((Date.now() - started) / 1000);

await mkdir(root + "target/bench", { recursive: true });
await writeFile(root + "target/bench/report.json", JSON.stringify(report, null, 2) + "\n");
const rendered = render(report);
// The server entry's proxy (issue 12), before the machine section.
const proxyServerMd = renderProxyServer(report.proxyServer);
const md = rendered.includes("## Machine") ? rendered.replace("## Machine", `${proxyServerMd}\n## Machine`) : `${rendered}\n${proxyServerMd}`;
await writeFile(root + "target/bench/report.md", md);
log(`wrote target/bench/report.md and report.json in ${report.elapsedSeconds} s`);
console.log(summaryTable(report));
