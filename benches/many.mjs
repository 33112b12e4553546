// runMany (issue 14): wall time of a batch of runs at a concurrency bound against the ideal
// (every slot busy all the time: ceil(runs / concurrency) rounds of one run's length), with
// GETs per run and the most runs in flight, from the mock's log. In headless Chromium through
// the package's browser entry. Standalone: `node benches/many.mjs` after `make pkg devserver`.

import { createScenario, encodePng, launchBrowser, startServer } from "../tests/e2e/harness.mjs";

const IMAGE = `data:image/png;base64,${encodePng(8, 8, (x, y) => [x * 30, y * 30, 90]).toString("base64")}`;

/** `{ runs, concurrency, runMs }` -> the measurements, each a plain number of ms or a count. */
export async function benchMany({ runs = 50, concurrency = 4, runMs = 2000, pollIntervalMs } = {}) {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, runMs - 200] });
    const page = await browser.newPage();
    await page.goto(`${server.url}/api/runflow/_backend`);
    const { wallMs, ok } = await page.evaluate(
      async ({ base, runs, concurrency, pollIntervalMs, image }) => {
        const { default: init, KontextClient } = await import("/pkg/index.js");
        await init();
        const client = new KontextClient({ baseUrl: base, ...(pollIntervalMs ? { pollIntervalMs } : {}) });
        const inputs = Array.from({ length: runs }, (_, n) => ({ prompt: `batch ${n}`, image_url: image }));
        const started = performance.now();
        const results = await client.runMany(inputs, { concurrency });
        return { wallMs: performance.now() - started, ok: results.filter((r) => r.ok).length };
      },
      { base: scenario.base, runs, concurrency, pollIntervalMs, image: IMAGE },
    );
    const log = await scenario.log();
    const gets = log.filter((entry) => entry.kind === "get").length;
    const creates = log.filter((entry) => entry.kind === "create" && entry.status === 201).length;
    const idealMs = Math.ceil(runs / concurrency) * runMs;
    return { runs, concurrency, runMs, ok, creates, wallMs, idealMs, ratio: wallMs / idealMs, getsPerRun: gets / runs };
  } finally {
    await browser.close();
    await server.stop();
  }
}

/** The report's section for it. */
export function renderMany(m) {
  const s = (ms) => `${(ms / 1000).toFixed(1)} s`;
  return [
    "## Many runs (issue 14)",
    "",
    `\`client.runMany\` of ${m.runs} runs of ${m.runMs / 1000} s (the mock's lifecycle) at concurrency ${m.concurrency}, polling on the default schedule, in headless Chromium through the package's entry: **${s(m.wallMs)}** against the ideal ${s(m.idealMs)} (every slot always busy: ${Math.ceil(m.runs / m.concurrency)} rounds of ${m.runMs / 1000} s), **${m.ratio.toFixed(2)}x**; ${m.ok}/${m.runs} succeeded, ${m.creates} runs created, ${m.getsPerRun.toFixed(1)} GETs per run. What is above the ideal is each run's last poll interval: a slot frees when its run is seen ended.`,
    "",
  ].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchMany();
  console.log(JSON.stringify(result, null, 2));
}
