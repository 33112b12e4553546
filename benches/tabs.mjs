// One poller per run across tabs (issue 14): GETs per run when 3 tabs of one browser profile wait
// on each run, against 1 tab, and the same 3 tabs through the bare glue (each polling for
// itself), from the mock's log. In headless Chromium through the package's browser entry.
// Standalone: `node benches/tabs.mjs` after `make pkg devserver`.

import { createScenario, encodePng, launchBrowser, startServer } from "../tests/e2e/harness.mjs";

const IMAGE = `data:image/png;base64,${encodePng(8, 8, (x, y) => [x * 30, y * 30, 90]).toString("base64")}`;

/** `{ runs, runMs }` -> GETs per run and wait time for each way of waiting. */
export async function benchTabs({ runs = 6, runMs = 5000 } = {}) {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const measure = async (tabs, entry) => {
      const scenario = await createScenario(server.url, { lifecycle_ms: [100, 100, runMs - 200] });
      const context = await browser.newContext();
      try {
        const pages = [];
        for (let n = 0; n < tabs; n += 1) {
          const page = await context.newPage();
          await page.goto(`${server.url}/api/runflow/_backend`);
          await page.evaluate(
            async ({ base, entry }) => {
              const { default: init, KontextClient } = await import(entry);
              await init();
              window.client = new KontextClient({ baseUrl: base });
            },
            { base: scenario.base, entry },
          );
          pages.push(page);
        }
        const ids = await pages[0].evaluate(
          ({ runs, image }) => Promise.all(Array.from({ length: runs }, (_, n) => client.createRun({ prompt: `tabs ${n}`, image_url: image }).then((run) => run.id))),
          { runs, image: IMAGE },
        );
        const started = Date.now();
        const waits = await Promise.all(
          pages.map((page) =>
            page.evaluate(async (ids) => {
              const begun = performance.now();
              const ends = await Promise.all(ids.map((id) => client.waitForRun(id).then(() => performance.now() - begun)));
              return Math.max(...ends);
            }, ids),
          ),
        );
        const log = await scenario.log();
        const gets = log.filter((entry) => entry.kind === "get").length;
        return { tabs, entry, getsPerRun: gets / runs, slowestTabMs: Math.max(...waits), wallMs: Date.now() - started };
      } finally {
        await context.close();
      }
    };
    return {
      runs,
      runMs,
      oneTab: await measure(1, "/pkg/index.js"),
      threeTabs: await measure(3, "/pkg/index.js"),
      threeTabsBareGlue: await measure(3, "/pkg/runflow_kontext.js"),
    };
  } finally {
    await browser.close();
    await server.stop();
  }
}

/** The report's section for it. */
export function renderTabs(m) {
  const row = (what, r) => `| ${what} | ${r.getsPerRun.toFixed(1)} | ${(r.slowestTabMs / 1000).toFixed(2)} s |`;
  return [
    "## Tabs waiting on the same runs (issue 14)",
    "",
    `${m.runs} runs of ${m.runMs / 1000} s (the mock's lifecycle), each waited on by every tab of one browser profile, polling on the default schedule, in headless Chromium:`,
    "",
    "| tabs | GETs per run | slowest tab's wait |",
    "|---|---|---|",
    row("1 tab (package entry)", m.oneTab),
    row("3 tabs (package entry: one poller per run)", m.threeTabs),
    row("3 tabs (bare wasm glue: each tab polls)", m.threeTabsBareGlue),
    "",
  ].join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchTabs();
  console.log(JSON.stringify(result, null, 2));
  console.log(renderTabs(result));
}
